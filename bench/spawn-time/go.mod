module fractal/bench/spawntime

go 1.24.0
