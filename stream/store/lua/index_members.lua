--[[
index_members.lua -- the members of one shard's score index whose value lies in given ranges.

KEYS[1]  the index's bucket directory (zset, every score 0, member = a bucket's bound)
ARGV[1]  the index's name: the bucket of bound <b> is the zset ARGV[1] .. ":" .. <b>
then per range (lo, hi], four values:
  lo and hi as ZRANGEBYSCORE takes them ("(<lo>" or "-inf", "<hi>" or "+inf"), and
  encode(lo + 1) and encode(hi + 1) as bounds ("" = no limit), so that the buckets visited
  are the one holding the first value above lo up to the last starting below hi + 1

Returns  the members found, a member once per range it falls in.

Read-only, and one step: a commit splitting a bucket between a directory read and a
bucket read could otherwise hide the members it moved.
--]]
local dir, base, out = KEYS[1], ARGV[1], {}
for p = 2, #ARGV, 4 do
  local lo, hi, first, last = ARGV[p], ARGV[p + 1], ARGV[p + 2], ARGV[p + 3]
  local start = ''
  if first ~= '' then
    start = redis.call('ZRANGE', dir, '[' .. first, '-', 'BYLEX', 'REV', 'LIMIT', 0, 1)[1] or ''
  end
  local buckets = {start}
  local upto = last == '' and '+' or '(' .. last
  for _, b in ipairs(redis.call('ZRANGE', dir, '(' .. start, upto, 'BYLEX')) do
    buckets[#buckets + 1] = b
  end
  for _, b in ipairs(buckets) do
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', base .. ':' .. b, lo, hi)) do
      out[#out + 1] = m
    end
  end
end
return out
