--[[
standing.lua -- read what a re-score against new thresholds needs, for a batch of customers.

KEYS[1..4] population indexes ix:r ix:f ix:m ix:i of one shard (zsets, member = customer id)
KEYS[5]    that shard's due zset
KEYS[5+n]  the n-th customer's hash
ARGV[n]    the n-th customer's id (its member in the zsets); #ARGV == #KEYS - 5

Returns  {fields, r, f, m, i, due}: fields holds, per customer, its hash's
         v fo lo li ch sc sg sq tl lt cr (false = absent); r..due hold, per customer, its
         score in that zset (false = not a member).

Read-only. The index entries are the customer's metrics as of its last commit, and stay
exact until the time in its due entry, so a customer re-scored before then needs neither
its orders nor its interactions: a refresh reads about 15 values per customer instead of
its whole hash. Consistency comes from the commit script's version check.
--]]
local fields = {}
for n = 1, #ARGV do
  fields[n] = redis.call('HMGET', KEYS[5 + n], 'v', 'fo', 'lo', 'li', 'ch', 'sc', 'sg', 'sq',
    'tl', 'lt', 'cr')
end
local out = {fields}
for k = 1, 5 do
  out[k + 1] = redis.call('ZMSCORE', KEYS[k], unpack(ARGV))
end
return out
