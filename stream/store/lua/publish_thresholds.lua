--[[
publish_thresholds.lua -- publish a new thresholds version, fenced by the refresh lease.

KEYS[1]  thresholds hash (fields: v = version, doc = JSON of the edges, base = JSON of the
         last version every customer is known to be consistent with; version -1 = none)
KEYS[2]  refresh lease (string holding the holder's token)
ARGV[1]  lease token of the caller
ARGV[2]  version the caller read
ARGV[3]  field to write: "doc" (publish a new version) or "base" (mark a version settled)
ARGV[4]  JSON document to store in that field
ARGV[5]  with "doc": the highest version any shard's fence holds (0 = none known); the new
         version is one above both it and ARGV[2]

Returns  the new (or current) version on success; -1 lease lost; -2 version moved on.

Invariant: versions only rise, by one unless a fence is ahead, and only the current lease
holder that read the latest version can write, so a stale leader can never overwrite a newer
result. A fence ahead of the stored version holds one that a rollback of Redis lost after
commits used it: publishing above it keeps their number from naming a second version.
--]]
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return -1
end
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[2]) then
  return -2
end
if ARGV[3] == 'doc' then
  v = math.max(v, tonumber(ARGV[5])) + 1
  redis.call('HSET', KEYS[1], 'v', tostring(v), 'doc', ARGV[4])
else
  redis.call('HSET', KEYS[1], 'base', ARGV[4])
end
return v
