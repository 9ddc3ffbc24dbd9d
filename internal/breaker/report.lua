-- Report how an admitted send went.
-- KEYS[1] the breaker's hash; ARGV: sent, failure, probe (0|1), latency (ms),
-- failureThreshold, failureRatio, minRequests, window (ms), openFor (ms),
-- count, tally (0|1).
-- With tally set it adds a worker's tally of count sends that went well
-- through a clean closed breaker (latency their sum) to the window's counts,
-- and leaves the state and the consecutive failures alone: those sends were
-- reported as they happened by not being failures.
-- Returns {state after, state before}.
local key = KEYS[1]
local sent = ARGV[1] == '1'
local failure = ARGV[2] == '1'
local probe = ARGV[3] == '1'
local latency = tonumber(ARGV[4])
local threshold = tonumber(ARGV[5])
local ratio = tonumber(ARGV[6])
local minReq = tonumber(ARGV[7])
local window = tonumber(ARGV[8])
local openFor = tonumber(ARGV[9])
local count = tonumber(ARGV[10]) or 1
local tally = ARGV[11] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', key, 'state', 'fails', 'probes', 'wstart', 'wreq', 'wfail', 'wlat')
local state = tonumber(s[1]) or 0
local before = state
if probe then
  redis.call('HSET', key, 'probes', math.max(0, (tonumber(s[3]) or 0) - 1))
end
if not sent then
  return {state, before}
end
local wstart = tonumber(s[4]) or now
local wreq, wfail, wlat = tonumber(s[5]) or 0, tonumber(s[6]) or 0, tonumber(s[7]) or 0
if now - wstart >= window then
  redis.call('HSET', key, 'preq', wreq, 'pfail', wfail, 'plat', wlat)
  if now - wstart >= 2 * window then
    redis.call('HSET', key, 'preq', 0, 'pfail', 0, 'plat', 0)
  end
  wstart, wreq, wfail, wlat = now, 0, 0, 0
end
wreq = wreq + count
wlat = wlat + latency
if tally then
  redis.call('HSET', key, 'wstart', wstart, 'wreq', wreq, 'wlat', wlat)
  return {state, before}
end
local fails = tonumber(s[2]) or 0
if failure then
  wfail = wfail + 1
  fails = fails + 1
else
  fails = 0
end
if state == 1 then
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
-- (state 2: a send admitted before it opened; it only counts.)
redis.call('HSET', key, 'state', state, 'fails', fails, 'wstart', wstart, 'wreq', wreq, 'wfail', wfail, 'wlat', wlat)
if state ~= before then
  redis.call('HSET', key, 'changed', now)
end
return {state, before}
