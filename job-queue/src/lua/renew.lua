-- Heartbeat of one worker: renew the leases it still holds and refresh its
-- worker record (which expires when heartbeats stop).
-- KEYS[1] = {q}:leased
-- ARGV: prefix, visibility ms, worker, record ttl ms, started ms, layers, n,
-- then per lease: id, generation
-- Returns the ids whose lease is no longer this worker's.
local prefix = ARGV[1]
local vt = tonumber(ARGV[2])
local worker = ARGV[3]
local ttl = tonumber(ARGV[4])
local started = ARGV[5]
local layers = ARGV[6]
local n = tonumber(ARGV[7])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local leased = prefix .. ':leased'
local lost = {}
for i = 0, n - 1 do
  local id, gen = ARGV[8 + i * 2], ARGV[9 + i * 2]
  local jk = prefix .. ':job:' .. id
  -- still leased, under the same generation
  if (redis.call('HGET', jk, 'gen') or '0') == gen and redis.call('ZSCORE', leased, id) then
    redis.call('ZADD', leased, 'XX', now + vt, id)
  else
    lost[#lost + 1] = id
  end
end
local wk = prefix .. ':worker:' .. worker
redis.call('HSET', wk, 'started', started, 'last', now, 'layers', layers, 'held', n)
redis.call('PEXPIRE', wk, ttl)
redis.call('ZADD', prefix .. ':workers', now, worker)
redis.call('ZREMRANGEBYSCORE', prefix .. ':workers', '-inf', now - ttl)
return lost
