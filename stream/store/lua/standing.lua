--[[
standing.lua -- read what a re-score against new thresholds needs, for a batch of customers.

KEYS[1]    the shard's single due zset of the older layout
KEYS[2n]   the n-th customer's hash   KEYS[1+2n] its due bucket
ARGV[n]    the n-th customer's id (its member in the due zsets); #ARGV == (#KEYS - 1) / 2

Returns  {fields, due}: fields holds, per customer, its hash's
         v fo lo li ch sc sg sq tl lt cr x (false = absent), x being its score index
         entries "r,f,m,i" as last committed; due holds, per customer, the earlier of its
         entry in its due bucket and in the older zset (false = none).

Read-only. The index entries are the customer's metrics as of its last commit, and stay
exact until the time in its due entry, so a customer re-scored before then needs neither
its orders nor its interactions: a refresh reads about 15 values per customer instead of
its whole hash. Consistency comes from the commit script's version check.
--]]
local fields, due = {}, {}
for n = 1, #ARGV do
  fields[n] = redis.call('HMGET', KEYS[2 * n], 'v', 'fo', 'lo', 'li', 'ch', 'sc', 'sg',
    'sq', 'tl', 'lt', 'cr', 'x')
  due[n] = redis.call('ZSCORE', KEYS[1 + 2 * n], ARGV[n])
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  local older = redis.call('ZMSCORE', KEYS[1], unpack(ARGV))
  for n = 1, #ARGV do -- the earlier of the two: a worker of the older layout may still write
    if older[n] and (not due[n] or tonumber(older[n]) < tonumber(due[n])) then
      due[n] = older[n]
    end
  end
end
return {fields, due}
