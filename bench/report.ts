// Machine-readable bench results: each bench-* target records its figures in
// build/bench/NAME.json, and bench/collect.ts (make bench) gathers them into
// bench/results.{md,json,svg}. Every figure carries the environment it was
// measured in, since these machines are noisy and TCG is not KVM.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export interface BenchEnv {
  accel: string;
  hostCpus: number;
  hostKernel: string;
  guestKernel?: string;
  transport: string;
}

export interface Figure {
  figure: string;
  unit: string;
  fractal: number;
  /** What fractal is compared with, and its value; absent for plain measurements. */
  peer?: { name: string; value: number };
  /** peer / fractal for "lower is better" figures, fractal / peer otherwise: above 1 means fractal wins. */
  advantage?: number;
  lowerIsBetter: boolean;
  target?: string;
  env: BenchEnv;
}

/** A pass/fail check (bench-reliability's rows): what was tried and what held. */
export interface Check {
  area: string;
  tried: string;
  result: string;
  held: boolean;
}

export const RESULTS_DIR = path.resolve(import.meta.dir, "../build/bench");

export function env(accel: string, transport: string, guestKernel?: string): BenchEnv {
  return { accel, hostCpus: os.cpus().length, hostKernel: os.release(), guestKernel, transport };
}

/** A compared figure; the advantage is computed so that > 1 means fractal is better. */
export function compared(figure: string, unit: string, fractal: number, peer: string, peerValue: number, lowerIsBetter: boolean, e: BenchEnv, target?: string): Figure {
  const advantage = lowerIsBetter ? peerValue / fractal : fractal / peerValue;
  return { figure, unit, fractal, peer: { name: peer, value: peerValue }, advantage, lowerIsBetter, target, env: e };
}

/** The q-quantile of some timings (q = 0.5: the median). */
export function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}

export const median = (xs: number[]) => quantile(xs, 0.5);

/** Writes a bench's record for bench/collect.ts; checks carry the environment they all ran in. */
export function record(bench: string, figures: Figure[], checks?: { env: BenchEnv; rows: Check[] }): void {
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  fs.writeFileSync(path.join(RESULTS_DIR, `${bench}.json`), JSON.stringify({ bench, at: new Date().toISOString(), figures, checks }, null, 1));
}
