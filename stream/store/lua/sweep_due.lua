--[[
sweep_due.lua -- the customers of one shard the clock has reached.

KEYS[1]  the shard's due heads zset (member = a due bucket's key, score <= the earliest
         due time in that bucket)
KEYS[2..] the buckets to visit: those whose head had passed when the caller read KEYS[1],
         earliest first
ARGV[1]  now (epoch ms)           ARGV[2]  at most this many customers

Returns  the ids of up to ARGV[2] customers whose due time is <= now, bucket by bucket.

Invariant kept atomically: every non-empty bucket has a head no later than its earliest
entry. A commit only lowers a head (ZADD LT) and leaves it when entries leave, so a head
may be early, never late; each bucket visited here gets its exact head back (or loses it
when empty), so a stale head costs one visit; a head lowered after the caller read them
is visited by the next sweep. All KEYS share the shard's hash tag: one cluster slot.
--]]
local now, limit = ARGV[1], tonumber(ARGV[2])
local out = {}
for k = 2, #KEYS do
  local bucket = KEYS[k]
  local due = redis.call('ZRANGEBYSCORE', bucket, '-inf', now, 'LIMIT', 0, limit - #out)
  for _, member in ipairs(due) do out[#out + 1] = member end
  local first = redis.call('ZRANGE', bucket, 0, 0, 'WITHSCORES')
  if first[1] then
    redis.call('ZADD', KEYS[1], first[2], bucket)
  else
    redis.call('ZREM', KEYS[1], bucket)
  end
  if #out >= limit then break end
end
return out
