"""The Lua scripts that change a shared bucket atomically on the Redis server.

Every script touches the keys of one (provider, bucket) only, all with the hash tag
`{provider:bucket}`, so it runs on one Redis Cluster slot. Time is the server's `TIME`:
no host clock enters a script. Numbers travel as strings (`%.17g`): Lua numbers
returned as Redis integers would be truncated.

`gcra` hash: `t:<unit>` the GCRA theoretical arrival time (server seconds), `r:<unit>` the
rate it was computed at, `factor` the shared learned factor, `pause_until` (server seconds).
`learned` hash: `version`, `snapshot` (the learner's, deadlines relative to `at`), `at`, `host`.
"""

from __future__ import annotations

__all__ = ("FETCH", "GIVE_BACK", "LEARN", "TAKE")

_PRELUDE = """
local function fmt(x) return string.format('%.17g', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
-- The GCRA state of one unit at `rate`: a tat computed at another rate keeps its fill level.
local function unit_tat(key, unit, rate)
  local tat = tonumber(redis.call('HGET', key, 't:' .. unit) or now)
  local old = tonumber(redis.call('HGET', key, 'r:' .. unit) or rate)
  if tat < now then tat = now end
  if old ~= rate then tat = now + (tat - now) * old / rate end
  return tat
end
"""

# A lease. KEYS[1] gcra. ARGV: n, then per unit: name, configured rate/s, burst, least, most.
# All or nothing at `least` for every unit (a waiter's cost); up to `most` when available.
# -> {'1', granted per unit..., left in the shared bucket per unit...}
#    or {'0', seconds until `least` could be granted}
TAKE = (
    _PRELUDE
    + """
local key = KEYS[1]
local n = tonumber(ARGV[1])
local factor = tonumber(redis.call('HGET', key, 'factor') or '1')
local pause = tonumber(redis.call('HGET', key, 'pause_until') or '0')
if pause > now then return {'0', fmt(pause - now)} end
local tats, rates, free = {}, {}, {}
local delay = 0
for i = 0, n - 1 do
  local a = 2 + i * 5
  local rate = tonumber(ARGV[a + 1]) * factor
  local burst = tonumber(ARGV[a + 2])
  local least = tonumber(ARGV[a + 3])
  local tat = unit_tat(key, ARGV[a], rate)
  local avail = burst - (tat - now) * rate
  if avail + 1e-9 < least then
    local d = (least - avail) / rate
    if d > delay then delay = d end
  end
  tats[i], rates[i], free[i] = tat, rate, avail
end
if delay > 0 then return {'0', fmt(delay)} end
local out = {'1'}
local full_in = 0
for i = 0, n - 1 do
  local a = 2 + i * 5
  local least, most = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local g = math.min(most, free[i])
  if g < least then g = least end
  if g < 0 then g = 0 end
  local tat = tats[i] + g / rates[i]
  redis.call('HSET', key, 't:' .. ARGV[a], fmt(tat), 'r:' .. ARGV[a], fmt(rates[i]))
  if tat - now > full_in then full_in = tat - now end
  out[#out + 1] = fmt(g)
end
-- What is left in the shared bucket per unit (selection's headroom on the hosts).
for i = 0, n - 1 do
  local a = 2 + i * 5
  out[#out + 1] = fmt(math.max(0, free[i] - tonumber(out[i + 2])))
end
-- A bucket nobody used for a day is forgotten (it would be full again anyway).
redis.call('PEXPIRE', key, math.ceil((full_in + 86400) * 1000))
return out
"""
)

# Unused lease handed back. KEYS[1] gcra. ARGV: n, then per unit: name, amount.
GIVE_BACK = (
    _PRELUDE
    + """
local key = KEYS[1]
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local unit, amount = ARGV[2 + i * 2], tonumber(ARGV[3 + i * 2])
  local rate = tonumber(redis.call('HGET', key, 'r:' .. unit) or '0')
  if rate > 0 then
    local tat = unit_tat(key, unit, rate) - amount / rate
    if tat < now then tat = now end
    redis.call('HSET', key, 't:' .. unit, fmt(tat))
  end
end
return 1
"""
)

# What a host learned, compare-and-set on the version it last saw (-1: unconditionally, for
# a reset). KEYS[1] learned, KEYS[2] gcra. ARGV: expected version, host, snapshot, factor,
# pause seconds from now (0: none), release (1: end any pause, empty at most), channel,
# message prefix, n, then per unit: name, configured rate/s, burst.
# -> {'1', new version} or {'0', the version that is there}
LEARN = (
    _PRELUDE
    + """
local learned, key = KEYS[1], KEYS[2]
local current = tonumber(redis.call('HGET', learned, 'version') or '0')
local expected = tonumber(ARGV[1])
if expected >= 0 and current ~= expected then return {'0', tostring(current)} end
local version = current + 1
redis.call('HSET', learned, 'version', version, 'host', ARGV[2], 'snapshot', ARGV[3], 'at', fmt(now))
redis.call('PEXPIRE', learned, 7 * 86400 * 1000)
local factor = tonumber(ARGV[4])
local pause_s = tonumber(ARGV[5])
local release = ARGV[6] == '1'
local pause_until = 0
if pause_s > 0 then pause_until = now + pause_s end
local n = tonumber(ARGV[9])
for i = 0, n - 1 do
  local a = 10 + i * 3
  local rate = tonumber(ARGV[a + 1]) * factor
  local burst = tonumber(ARGV[a + 2])
  local tat = unit_tat(key, ARGV[a], rate)
  -- A pause grants nothing before its end and releases no stored burst when it ends.
  if pause_until > 0 and tat < pause_until + burst / rate then tat = pause_until + burst / rate end
  if release and tat > now + burst / rate then tat = now + burst / rate end
  redis.call('HSET', key, 't:' .. ARGV[a], fmt(tat), 'r:' .. ARGV[a], fmt(rate))
end
redis.call('HSET', key, 'factor', fmt(factor), 'pause_until', fmt(pause_until))
redis.call('PEXPIRE', key, 7 * 86400 * 1000)
redis.call('PUBLISH', ARGV[7], ARGV[8] .. version)
return {'1', tostring(version)}
"""
)

# KEYS[1] learned. -> {version or '', snapshot or '', seconds since it was written or '', host}
FETCH = (
    _PRELUDE
    + """
local v = redis.call('HMGET', KEYS[1], 'version', 'snapshot', 'at', 'host')
local age = ''
if v[3] then age = fmt(now - tonumber(v[3])) end
return {v[1] or '', v[2] or '', age, v[4] or ''}
"""
)
