--[[
standing.lua -- read what a re-score against new thresholds needs, for a batch of customers.

KEYS[1..4] population indexes ix:r ix:f ix:m ix:i of one shard (zsets, member = customer id)
KEYS[5]    that shard's single due zset of the older layout
KEYS[4+2n] the n-th customer's hash   KEYS[5+2n] its due bucket
ARGV[n]    the n-th customer's id (its member in the zsets); #ARGV == (#KEYS - 5) / 2

Returns  {fields, r, f, m, i, due}: fields holds, per customer, its hash's
         v fo lo li ch sc sg sq tl lt cr (false = absent); r..due hold, per customer, its
         score in that zset (false = not a member); due is the earlier of its bucket's
         entry and its entry in the older zset.

Read-only. The index entries are the customer's metrics as of its last commit, and stay
exact until the time in its due entry, so a customer re-scored before then needs neither
its orders nor its interactions: a refresh reads about 15 values per customer instead of
its whole hash. Consistency comes from the commit script's version check.
--]]
local fields, due = {}, {}
for n = 1, #ARGV do
  fields[n] = redis.call('HMGET', KEYS[4 + 2 * n], 'v', 'fo', 'lo', 'li', 'ch', 'sc', 'sg',
    'sq', 'tl', 'lt', 'cr')
  due[n] = redis.call('ZSCORE', KEYS[5 + 2 * n], ARGV[n])
end
local out = {fields}
for k = 1, 4 do
  out[k + 1] = redis.call('ZMSCORE', KEYS[k], unpack(ARGV))
end
if redis.call('EXISTS', KEYS[5]) == 1 then
  local older = redis.call('ZMSCORE', KEYS[5], unpack(ARGV))
  for n = 1, #ARGV do -- the earlier of the two: a worker of the older layout may still write
    if older[n] and (not due[n] or tonumber(older[n]) < tonumber(due[n])) then
      due[n] = older[n]
    end
  end
end
out[6] = due
return out
