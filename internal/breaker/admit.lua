-- Admit one send through a provider's breaker.
-- KEYS[1] the breaker's hash; ARGV: openFor (ms), halfOpenProbes.
-- Returns {allowed (0|1), state after, state before, wait (ms),
-- consecutive failures, lease}: lease numbers the half-open period a probe
-- was admitted in, so its report can tell whether it is still a probe.
local key = KEYS[1]
local openFor = tonumber(ARGV[1])
local maxProbes = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', key, 'state', 'until', 'probes', 'hsince', 'fails', 'lease')
local state = tonumber(s[1]) or 0
local before = state
local fails = tonumber(s[5]) or 0
local lease = tonumber(s[6]) or 0
if state == 0 then
  return {1, 0, 0, 0, fails, lease}
end
local probes = tonumber(s[3]) or 0
local hsince = tonumber(s[4]) or now
if state == 2 then
  local untilv = tonumber(s[2]) or 0
  if now < untilv then
    return {0, 2, 2, untilv - now, fails, lease}
  end
  state, probes, hsince, lease = 1, 0, now, lease + 1
  redis.call('HSET', key, 'state', 1, 'probes', 0, 'hsince', now, 'changed', now, 'lease', lease)
end
-- Half-open: a bounded number of probes at once. Probes that never
-- reported (their worker died) are given up after openFor: a new lease
-- begins, and a report of the old one's probes no longer counts as a
-- probe's.
if now - hsince >= openFor then
  probes, hsince, lease = 0, now, lease + 1
  redis.call('HSET', key, 'probes', 0, 'hsince', now, 'lease', lease)
end
if probes >= maxProbes then
  return {0, 1, before, math.max(1, openFor - (now - hsince)), fails, lease}
end
redis.call('HSET', key, 'probes', probes + 1)
return {1, 1, before, 0, fails, lease}
