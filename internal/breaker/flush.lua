-- Add a worker's tally of sends that went well while the breaker was
-- closed and clean (no failure since the last success) to the window's
-- counts. It leaves the state and the consecutive failures alone: those
-- sends were reported as they happened by not being failures.
-- KEYS[1] the breaker's hash; ARGV: requests, latency sum (ms), window (ms).
local key = KEYS[1]
local n = tonumber(ARGV[1])
local latency = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', key, 'wstart', 'wreq', 'wfail', 'wlat')
local wstart = tonumber(s[1]) or now
local wreq, wfail, wlat = tonumber(s[2]) or 0, tonumber(s[3]) or 0, tonumber(s[4]) or 0
if now - wstart >= window then
  redis.call('HSET', key, 'preq', wreq, 'pfail', wfail, 'plat', wlat)
  if now - wstart >= 2 * window then
    redis.call('HSET', key, 'preq', 0, 'pfail', 0, 'plat', 0)
  end
  wstart, wreq, wfail, wlat = now, 0, 0, 0
end
redis.call('HSET', key, 'wstart', wstart, 'wreq', wreq + n, 'wfail', wfail, 'wlat', wlat + latency)
return 1
