-- Report how admitted sends went, in the order they were reported.
-- KEYS[1] the breaker's hash; ARGV: outcome, probe (0|1), lease, latency
-- (ms), failureThreshold, failureRatio, minRequests, window (ms), openFor
-- (ms), successes, successes' latency (ms).
-- First the successes (sends that went well, reported before this
-- outcome; their latency summed): each resets the consecutive failures.
-- Then the outcome: 0 none, 1 nothing was sent (a probe's place given
-- back), 2 a success, 3 a failure. Only a probe of the current half-open
-- lease settles a half-open breaker; any other report only counts.
-- Returns {state after, state before}.
local key = KEYS[1]
local outcome = tonumber(ARGV[1])
local probe = ARGV[2] == '1'
local lease = tonumber(ARGV[3])
local latency = tonumber(ARGV[4])
local threshold = tonumber(ARGV[5])
local ratio = tonumber(ARGV[6])
local minReq = tonumber(ARGV[7])
local window = tonumber(ARGV[8])
local openFor = tonumber(ARGV[9])
local oks = tonumber(ARGV[10]) or 0
local okLatency = tonumber(ARGV[11]) or 0
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', key, 'state', 'fails', 'probes', 'wstart', 'wreq', 'wfail', 'wlat', 'lease')
local state = tonumber(s[1]) or 0
local before = state
-- A probe given up (its lease ended) is no longer one: it neither gives
-- back a place nor settles the breaker.
probe = probe and state == 1 and lease == (tonumber(s[8]) or 0)
if probe then
  redis.call('HSET', key, 'probes', math.max(0, (tonumber(s[3]) or 0) - 1))
end
local sent = outcome >= 2
if oks == 0 and not sent then
  return {state, before}
end
local failure = outcome == 3
local wstart = tonumber(s[4]) or now
local wreq, wfail, wlat = tonumber(s[5]) or 0, tonumber(s[6]) or 0, tonumber(s[7]) or 0
if now - wstart >= window then
  redis.call('HSET', key, 'preq', wreq, 'pfail', wfail, 'plat', wlat)
  if now - wstart >= 2 * window then
    redis.call('HSET', key, 'preq', 0, 'pfail', 0, 'plat', 0)
  end
  wstart, wreq, wfail, wlat = now, 0, 0, 0
end
local fails = tonumber(s[2]) or 0
if oks > 0 then
  wreq, wlat, fails = wreq + oks, wlat + okLatency, 0
end
if sent then
  wreq, wlat = wreq + 1, wlat + latency
  if failure then
    wfail, fails = wfail + 1, fails + 1
  else
    fails = 0
  end
  if state == 1 and probe then
    if failure then
      state = 2
      redis.call('HSET', key, 'until', now + openFor)
    else
      -- Closed again: the failures that opened it no longer count.
      state, wreq, wfail, wlat = 0, 0, 0, 0
      redis.call('HSET', key, 'preq', 0, 'pfail', 0, 'plat', 0)
    end
  elseif state == 0 and failure then
    if fails >= threshold or (ratio > 0 and wreq >= minReq and wfail / wreq >= ratio) then
      state = 2
      redis.call('HSET', key, 'until', now + openFor)
    end
  end
end
-- (Open, or half-open and not this lease's probe: a send admitted before;
-- it only counts.)
redis.call('HSET', key, 'state', state, 'fails', fails, 'wstart', wstart, 'wreq', wreq, 'wfail', wfail, 'wlat', wlat)
if state ~= before then
  redis.call('HSET', key, 'changed', now)
end
return {state, before}
