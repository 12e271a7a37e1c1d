// Pins the containerd API and cgroups modules whose .proto files the shim is
// generated from (make build); there is no Go code here.
module fractal/containerd-protos

go 1.22.0

require (
	github.com/containerd/cgroups/v3 v3.1.3
	github.com/containerd/containerd/api v1.8.0
)
