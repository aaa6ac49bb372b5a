#!/usr/bin/env bash
# The proxy's cost: wrk against the simulator straight, then through `wbsessions proxy`, at the
# same concurrency, reads spread over 100 workbooks (docs/benchmarks.md, "The proxy").
# Needs wrk (apt-get install wrk) and a release build: cargo build --release.
set -euo pipefail
W=${W:-target/release/wbsessions}
SECS=${BENCH_SECS:-20}
CONNS=${BENCH_CONNS:-16}
command -v wrk > /dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 2; }
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2> /dev/null || true; rm -rf "$dir"' EXIT
export XDG_STATE_HOME=$dir/state XDG_DATA_HOME=$dir/data XDG_CONFIG_HOME=$dir/config
export WBSESSIONS_STORE=$dir/s.db WBSESSIONS_TOKEN=bench-token
mkdir -p "$XDG_CONFIG_HOME/wbsessions"
# The proxy's calls count in the request budget: set it out of the way (Graph's real limit is
# 1,500 per 10 s), so that what is measured is the proxy, not the budget.
printf 'request_budget = 1000000\nconcurrency = 64\n' > "$XDG_CONFIG_HOME/wbsessions/config.toml"

workbooks=()
for i in $(seq -w 1 100); do workbooks+=(--workbook "W$i"); done
latency=()
[ -z "${SIM_LATENCY:-}" ] || latency=(--latency "$SIM_LATENCY")
"$W" sim --token bench-token "${workbooks[@]}" "${latency[@]}" > "$dir/sim.out" &
until grep -q listening "$dir/sim.out" 2> /dev/null; do sleep 0.1; done
sim=$(sed -n 's/^listening on //p' "$dir/sim.out")
export WBSESSIONS_GRAPH_URL=$sim/v1.0
for i in $(seq -w 1 100); do "$W" create "s$i" --workbook "me/drive/items/W$i" > /dev/null; done

# One line per workbook: its path, and its session id (sent by the direct run only).
for i in $(seq -w 1 100); do
  printf "%s %s\n" "/v1.0/me/drive/items/W$i/workbook/worksheets/Sheet1/range(address='A1')" "$("$W" id "s$i")"
done > "$dir/targets"
cat > "$dir/spread.lua" <<'LUA'
local targets, i = {}, 0
for line in io.lines(os.getenv("TARGETS")) do
  local path, id = line:match("^(%S+) (%S+)$")
  targets[#targets + 1] = { path = path, id = id }
end
local with_session = os.getenv("WITH_SESSION") == "1"
request = function()
  i = i % #targets + 1
  local headers = { ["Authorization"] = "Bearer " .. os.getenv("BEARER") }
  if with_session then headers["workbook-session-id"] = targets[i].id end
  return wrk.format("GET", targets[i].path, headers)
end
LUA

"$W" proxy --listen 127.0.0.1:0 > "$dir/proxy.out" 2> /dev/null &
proxy_pid=$!
until grep -q listening "$dir/proxy.out" 2> /dev/null; do sleep 0.1; done
cpu_ticks() { awk '{print $14 + $15}' "/proc/$proxy_pid/stat"; }
eval "$("$W" proxy --print-env)"
proxy_base=${WBSESSIONS_GRAPH_URL%/v1.0}

run() { # name base bearer with_session
  TARGETS=$dir/targets BEARER=$3 WITH_SESSION=$4 \
    wrk -t"$(( CONNS < 2 ? 1 : 2 ))" -c"$CONNS" -d"${SECS}s" --latency -s "$dir/spread.lua" "$2" > "$dir/$1.wrk"
  local rps p50 p99
  rps=$(awk '/^Requests\/sec/ {print $2}' "$dir/$1.wrk")
  p50=$(awk '$1 == "50%" {print $2}' "$dir/$1.wrk")
  p99=$(awk '$1 == "99%" {print $2}' "$dir/$1.wrk")
  errors=$(awk '/Non-2xx|Socket errors/' "$dir/$1.wrk")
  echo "$1 $rps $p50 $p99"
  [ -z "$errors" ] || echo "  $1: $errors" >&2
}
direct=$(run direct "$sim" bench-token 1)
before=$(cpu_ticks)
proxied=$(run proxy "$proxy_base" "$WBSESSIONS_PROXY_TOKEN" 0)
ticks=$(( $(cpu_ticks) - before ))
echo "$direct"; echo "$proxied"
requests=$(awk '/requests in/ {print $1}' "$dir/proxy.wrk")
echo "proxy CPU: $(( ticks * 1000000 / $(getconf CLK_TCK) / requests )) us per call ($requests calls, keeper included)"
python3 - "$direct" "$proxied" <<'PY'
import re, sys
def ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
d, p = (line.split() for line in sys.argv[1:3])
print(f"added latency p50 {ms(p[2]) - ms(d[2]):.3f} ms, p99 {ms(p[3]) - ms(d[3]):.3f} ms; "
      f"throughput {float(p[1]):,.0f}/s through the proxy, {float(d[1]):,.0f}/s direct: ratio {float(p[1]) / float(d[1]):.2f}")
PY
