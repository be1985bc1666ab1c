--[[
publish_thresholds.lua -- publish a new thresholds version, fenced by the refresh lease.

KEYS[1]  thresholds hash (fields: v = version, doc = JSON of the edges, base = JSON of the
         last version every customer is known to be consistent with)
KEYS[2]  refresh lease (string holding the holder's token)
ARGV[1]  lease token of the caller
ARGV[2]  version the caller read (the new one is ARGV[2] + 1)
ARGV[3]  field to write: "doc" (publish a new version) or "base" (mark a version settled)
ARGV[4]  JSON document to store in that field

Returns  the new (or current) version on success; -1 lease lost; -2 version moved on.

Invariant: versions only ever rise by one, and only the current lease holder that read the
latest version can write, so a stale leader can never overwrite a newer result.
--]]
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return -1
end
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[2]) then
  return -2
end
if ARGV[3] == 'doc' then
  v = v + 1
  redis.call('HSET', KEYS[1], 'v', tostring(v), 'doc', ARGV[4])
else
  redis.call('HSET', KEYS[1], 'base', ARGV[4])
end
return v
