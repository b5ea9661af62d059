"""The Lua scripts of the Redis backend: every write is one script, atomic on the server.

Keys are under the namespace root ``P`` (``ARGV[1]``); see the layout in
:mod:`nbdb.backends.redis`.
"""

from __future__ import annotations

__all__ = [
    "ACQUIRE_LUA",
    "ALLOCATE_LUA",
    "COMMIT_LUA",
    "COMMIT_TOKEN_TTL_MS",
    "COMPACT_LUA",
    "FORMAT",
    "FORMAT_LUA",
    "HEAD_LUA",
    "LOG_READ_LUA",
    "LOST_LUA",
    "RANGE_LUA",
    "REFRESH_LUA",
    "REFUSED_MARK",
    "RELEASE_LUA",
    "UNLOGGED_MARK",
    "VOID_LUA",
]

COMMIT_TOKEN_TTL_MS = 600_000
"""How long a commit token is kept: longer than any retry of its commit."""

FORMAT = "2"
"""The stored format these scripts read and write (the namespace's ``fmt`` key).

1 (no ``fmt`` key; nbdb before format 2): a ``head`` hash, a ``clog`` stream of
every commit's token beside ``log``. 2: a ``rev`` counter, and ``log`` holds
every commit (the commit log and the change log of all objects in one).
"""


# Rules that more than one script (or one script in more than one place) writes out: each is
# written here once and put in where its __NAME__ stands.

_OKEY = r"'^o/([^/]*)/([^/]+)/([^/]+)$'"
"""The Lua pattern of an object key o/<topic>/<table>/<id> (topics, tables and ids hold no '/')."""

_OBJECT_DIRS = r"up .. tbl .. '/', revs, up, revs, 'o/', revs, '', revs"
"""dmr's fields of an object's directories at ``revs`` (``up`` is 'o/<topic>/'): its table's, its
topic's, 'o/' and ''."""


def _fill(text: str, **values: str) -> str:
    """``text`` with each ``__NAME__`` replaced by ``values[NAME]`` (each must be there)."""
    for name, value in values.items():
        mark = f"__{name}__"
        if mark not in text:
            raise AssertionError(f"{mark} is not in the script text")
        text = text.replace(mark, value)
    return text


REFUSED_MARK = "written unread; nothing was written"
"""The words of a refusal's error reply (see ``_refused``) after the key it names: the client
classifies the reply by them first, before the retryable replies' words (``busy``, ``loading``,
...), which the key (a topic, a table, the namespace) may hold."""


UNLOGGED_MARK = "the change log did not take the commit (nothing of it was written)"
"""The words of the error reply of a commit whose log entries failed twice (see announce): another
writer's entry at an id past what the script's numbers hold exactly (2^53) in a stream it appends
to. Its outcome is known, nothing of it applied: the client takes it for foreign data, not for an
unavailability."""


def _refused(key: str) -> str:
    """The Lua of a commit refused at a key it writes unread, ``key`` (an expression), one line.

    Every such write is a pcall made after the commit's revision ``rev0``; its error reply is
    ``got``. The writes before it are undone by the site; this gives the revision back (the next
    commit takes it) and fails the commit with the reply and the key. Written out at each site,
    not a function: Lua makes a closure at every run of the script (a first version's refuse()
    and unlist() closures, with a type() test per reply, cost a create and a delete +1.3 % server
    instructions, callgrind; see docs/benchmarks.md).
    """
    return (
        "if rev0 == 1 then redis.call('DEL', P .. 'rev') else redis.call('DECR', P .. 'rev') end; "
        f"error({{err = tostring(got.err) .. ' (nbdb: at ' .. {key} .. ', {REFUSED_MARK})'}})"
    )


# Helpers shared by the scripts. P is the root of the namespace's keys.
# A "directory" is a key prefix ending in '/'; d:<dir> holds its children, so a
# range never needs KEYS or a SCAN of the whole database.
_LUA_ROOT = r"""
local P = ARGV[1]
"""

# Where keys live (loc, group, ...), the head and the directory walk: Lua makes each function a
# closure at every run of a script, so the commit script's lean paths return before them.
_LUA_PLACES = _fill(
    r"""
-- Where a family key is stored: {hash, value field, version field, revision field, topic}.
-- An object key o/<topic>/<table>/<id> lives in its index key's hash (k:i/<table>/<id>) as
-- the fields ov, on, om and ot (its topic: the hash answers only for that topic), so that
-- the object and its index are one hash (read once, written once); any other key is its
-- own hash k:<key> of v, n, m.
local function loc(key)
  if key:sub(1, 2) == 'o/' then
    -- Topics, tables and ids hold no '/': a pattern without '.*' (a greedy '.*' backtracks,
    -- and cost the script ~5 us per key, ten HGETs' worth).
    local topic, tbl, id = key:match(__OKEY__)
    if topic then return P .. 'k:i/' .. tbl .. '/' .. id, 'ov', 'on', 'om', topic, tbl, id end
  end
  return P .. 'k:' .. key, 'v', 'n', 'm', false
end
-- A reverse reference r/<table>/<id>/<rest> is the field <rest> of one hash per target,
-- k:r/<table>/<id>/, whose value packs the version and revision (>i4 >i8) before the bytes:
-- a target's referrers are read, checked, listed and written with one call each, and need
-- no directory sets. group(path) of a key or a prefix: the hash, the field (or the field
-- prefix) and the target's prefix; nil for any other path.
local function group(path)
  local base, rest = path:match('^(r/[^/]+/[^/]+/)(.*)$')
  if base then return P .. 'k:' .. base, rest, base end
  return nil
end
local function gkey(key)
  local h, f = group(key)
  if h and f ~= '' then return h, f end
  return nil
end
local function ungroup(packed)  -- {value, version, revision}, or nil
  if not packed then return nil end
  local n, m, at = struct.unpack('>i4>i8', packed)
  return {packed:sub(at), n, m}
end
local function split(path)
  local body, trail = path, ''
  if body:sub(-1) == '/' then body = body:sub(1, -2); trail = '/' end
  local pos = body:match('^.*()/')
  if pos then return body:sub(1, pos), body:sub(pos + 1) .. trail end
  return '', body .. trail
end
-- The head: the revision and token of the last commit. Every commit writes them to 'last'
-- ('<revision> <token>') with its entry in 'log', and a read takes them there: the entry holds
-- the commit's whole change record (a transaction of 10,000 objects: 5.6 MB), which a read copied
-- to learn them. 'last' is the head while the counter is at its revision and 'log' holds no entry
-- past it (XREAD of nothing, the usual case): a commit of an nbdb that writes no 'last' moves both,
-- a refused commit that moved the counter moves 'rev'. Otherwise (or without 'last') the head is
-- the last entry of 'log', as before; 'rev' if the log was trimmed empty or deleted. A third
-- value, true, says the head is 'last''s.
local function head()
  local got = redis.call('MGET', P .. 'last', P .. 'rev')
  if got[1] and got[2] then
    local r, t = got[1]:match('^(%d+) (.*)$')
    if r == got[2] and not redis.call('XREAD', 'COUNT', 1, 'STREAMS', P .. 'log', r .. '-0') then
      return tonumber(r), t, true
    end
  end
  local top = redis.call('XREVRANGE', P .. 'log', '+', '-', 'COUNT', 1)[1]
  if top then
    local f = top[2]
    for i = 1, #f, 2 do
      if f[i] == 't' then return tonumber(top[1]:match('^(%d+)')), f[i + 1] end
    end
    return tonumber(top[1]:match('^(%d+)')), ''
  end
  return tonumber(redis.call('GET', P .. 'rev')) or 0, ''
end
-- fn(key) of every key under prefix, until fn returns false (then walk returns false);
-- enter(set, named, dir), if given, is asked before each directory set is read, and false stops
-- it too, 0 skips the set (empty); named: the set's name was read in its parent's set (so the
-- set exists: see lost).
local function walk(prefix, fn, enter)
  local pos = prefix:match('^.*()/')
  local stack
  if pos then stack = {{prefix:sub(1, pos), prefix:sub(pos + 1)}} else stack = {{'', prefix}} end
  while #stack > 0 do
    local top = table.remove(stack)
    local dir, filter = top[1], top[2]
    local d = P .. 'd:' .. dir
    local go = not enter or enter(d, top[3], dir)
    if not go then return false end
    -- go 0: the set is empty (enter counted it), nothing to read.
    for _, m in ipairs(go ~= 0 and redis.call('SMEMBERS', d) or {}) do
      if filter == '' or m:sub(1, #filter) == filter then
        if m:sub(-1) == '/' then
          stack[#stack + 1] = {dir .. m, '', true}
        elseif fn(dir .. m) == false then
          return false
        end
      end
    end
  end
  return true
end
""",
    OKEY=_OKEY,
)

_LUA_PRELUDE = _LUA_ROOT + _LUA_PLACES

# The ranges' check of an empty directory set (the range script's and LOST_LUA's, not the commit's).
_LUA_LOST = r"""
-- The key of an empty directory set dir (d:<dir>) that another writer deleted, or nil. nbdb
-- removes a directory's name from its parent's set in the script that empties the directory, so
-- a name in the parent's set without the set is a deletion: the range fails naming it rather than
-- listing nothing under it. A parent set that is gone too is asked of its own parent, and so up.
-- A parent of another type tells nothing (a range whose walk goes through it names it; this one's
-- does not). A name that is not ASCII is another writer's (nbdb spells every name in ASCII), no
-- set nbdb made: left out, as the client leaves out a name that is not UTF-8.
-- later: a table; given, a parent that does not name dir is put there instead of asked whether it
-- exists (the caller asks them all in one EXISTS, see the range script: a list of one table asks
-- it of every topic without the table).
local function lost(dir, later)
  if dir:find('[\128-\255]') then return nil end
  while dir ~= '' do
    local parent, name = split(dir)
    local pk = P .. 'd:' .. parent
    local has = redis.pcall('SISMEMBER', pk, name)
    if type(has) == 'table' then return nil end
    if has == 1 then return P .. 'd:' .. dir end
    if later then later[#later + 1] = pk; return nil end
    if redis.call('EXISTS', pk) == 1 then return nil end
    dir = parent
  end
  return nil
end
"""

# Appends length-prefixed (>i4) fields to the table ``out`` (nil/false: length -1):
# table.concat(out) is then one reply the client slices, not one RESP string per field.
_LUA_PACK = r"""
local NONE = struct.pack('>i4', -1)
local function pack(out, s)
  if s then
    out[#out + 1] = struct.pack('>i4', #s)
    out[#out + 1] = s
  else
    out[#out + 1] = NONE
  end
end
"""

# The commit script, in parts: each rule in one place, composed into COMMIT_LUA below in this
# order (the text Redis runs is their concatenation, the same as one string's).

# The commit's arguments, and a token already decided: applied ({2, rev}, written again for WAIT) or voided ({3});
# a head key of another type refused.
_COMMIT_DECIDED = _fill(
    r"""
local OBJ = ARGV[2]
local token = ARGV[3]
local history = ARGV[4]  -- a string: XADD takes it as sent (a number would be formatted again)
-- With the head an earlier commit left in 'last' (prior; read in the same call, see announce).
local got = redis.call('MGET', P .. 'ct:' .. token, P .. 'last')
local done, prior = got[1], got[2]
-- A commit found decided still writes (the token's TTL, to the same length): WAIT counts the
-- replicas that have this connection's writes, and a replica that has this one has the commit.
if done then redis.call('PEXPIRE', P .. 'ct:' .. token, __TTL__) end
if done == 'void' then return {3} end
if done then return {2, tonumber(done)} end
-- The head key 'last' of another type (another writer's) reads as nil in that MGET, and the
-- commit's SET would overwrite it: its type is asked then (a first commit's 'last', none, too),
-- and the commit refused before its first write, naming the key.
if not prior then
  local t = redis.call('TYPE', P .. 'last').ok
  if t ~= 'string' and t ~= 'none' then
    error({err = 'WRONGTYPE Operation against a key holding the wrong kind of value (nbdb: at '
      .. P .. 'last, __REFUSED_MARK__)'})
  end
end
""",
    REFUSED_MARK=REFUSED_MARK,
)

# The commit's revision (INCR rev), after its streams' types are known.
_COMMIT_REVISION = _fill(
    r"""
-- The revision: one INCR, the commit's first write. It is only the first try: announce() adds
-- the commit's log entries at it, and continues past any entry at or past it (see there).
-- Before it, one XREAD (of nothing: '$') of 'log' and of each stream of topics (a topic, or a
-- table whose keys are topics) fails if another writer put a key of another type at one: their
-- XADDs come after the directory sets and dmr, and a failed XADD cannot be undone exactly (the
-- stream's last id and counts stay moved, and dmr's old values are not known), so the commit is
-- refused here, with nothing written, naming the key (asked with TYPE only then).
local function refused(names, i, j, got)
  local key = names[i]
  for k = i, j do
    local t = redis.call('TYPE', names[k]).ok
    if t ~= 'stream' and t ~= 'none' then key = names[k]; break end
  end
  error({err = tostring(got.err) .. ' (nbdb: at ' .. key .. ', __REFUSED_MARK__)'})
end
-- missing: whether a stream of the commit's topics is missing (true, false), or nil: not known,
-- then they are counted (EXISTS). A missing stream is made by the commit's XADD, which adds its
-- topic to 'logs': another writer's key of another type there refuses that SADD after 'log' took
-- the entry and dmr was written (a stream another writer deleted under an object, or a new topic),
-- and neither can be undone exactly (the stream's last id and counts stay moved, dmr's old values
-- are not known). So 'logs''s type is asked here, before the first write, when one is missing. The
-- lean paths that read an EXISTS anyway name the stream in it (a create, a delete); an update and
-- the general path pay the call.
local function revision(topics, missing)
  if type(topics) == 'string' then
    -- One topic (the lean paths): no table made unless it fails.
    local got = redis.pcall('XREAD', 'STREAMS', P .. 'log', P .. 'log:' .. topics, '$', '$')
    if got and got.err then refused({P .. 'log', P .. 'log:' .. topics}, 1, 2, got) end
    if missing == nil then missing = redis.call('EXISTS', P .. 'log:' .. topics) == 0 end
  else
    local names = {P .. 'log'}
    for topic in pairs(topics) do names[#names + 1] = P .. 'log:' .. topic end
    -- In slices of 1,000 streams: unpack() takes a few thousand values at most.
    for i = 1, #names, 1000 do
      local args = {'STREAMS'}
      local j = math.min(i + 999, #names)
      for k = i, j do args[#args + 1] = names[k] end
      for _ = i, j do args[#args + 1] = '$' end
      local got = redis.pcall('XREAD', unpack(args))
      if got and got.err then refused(names, i, j, got) end
    end
    if missing == nil then
      missing = false
      for i = 2, #names, 1000 do
        local j = math.min(i + 999, #names)
        if redis.call('EXISTS', unpack(names, i, j)) < j - i + 1 then missing = true; break end
      end
    end
  end
  if missing then
    local t = redis.call('TYPE', P .. 'logs').ok
    if t ~= 'set' and t ~= 'none' then
      error({err = 'WRONGTYPE Operation against a key holding the wrong kind of value (nbdb: at '
        .. P .. 'logs, __REFUSED_MARK__)'})
    end
  end
  local rev = redis.call('INCR', P .. 'rev')
  -- Past 2^53 a Lua number (a double) rounds the revision: commits would share one, and a watcher
  -- skip them. Another writer's counter, refused as an object version of 2^53 or more is (given
  -- back: nothing written).
  if rev >= 9007199254740992 then
    redis.call('DECR', P .. 'rev')
    error({err = 'ERR nbdb: the revision counter ' .. P .. 'rev is 2^53 or more, past what a Lua number holds '
      .. 'exactly (nbdb: at ' .. P .. 'rev, __REFUSED_MARK__)'})
  end
  return rev
end
""",
    REFUSED_MARK=REFUSED_MARK,
)

# Numbers as strings, once each.
_COMMIT_STR = r"""
-- Numbers become strings once each, as integers: tostring (and a number passed to
-- redis.call) is Lua's '%.14g', a floating-point sprintf (~2.4k instructions), where
-- string.format('%d') is an integer's (less than half of that; the same digits below 1e14,
-- and exact above). A transaction wrote the same few numbers (the revision, version 1)
-- several times per object.
local fmt = string.format
local strs = {}
local function str(n)
  local v = strs[n]
  if not v then v = fmt('%d', n); strs[n] = v end
  return v
end
"""

# One change record (a key's new and previous value and version).
_COMMIT_RECORD = r"""
-- A change record: key, value, version, previous value, previous version, each
-- length-prefixed (>i4; -1 for none), joined by one '..': Lua makes a chain of
-- concatenations one new string, where struct.pack's c0 copies each byte through a buffer
-- (an update's record, its value and the previous one, cost 1.5x the instructions that way).
local NONE = '\255\255\255\255'  -- length -1: none
local function record(k, v, n, o, on)
  -- n and on: numbers, or already their strings (str()'s: the lean paths pass what they have).
  if type(n) == 'number' then n = str(n) end
  if type(on) == 'number' then on = str(on) end
  local hk, hn, hon = struct.pack('>i4', #k), struct.pack('>i4', #n), struct.pack('>i4', #on)
  if v and o then
    return hk .. k .. struct.pack('>i4', #v) .. v .. hn .. n .. struct.pack('>i4', #o) .. o .. hon .. on
  end
  if v then return hk .. k .. struct.pack('>i4', #v) .. v .. hn .. n .. NONE .. hon .. on end
  if o then return hk .. k .. NONE .. hn .. n .. struct.pack('>i4', #o) .. o .. hon .. on end
  return hk .. k .. NONE .. hn .. n .. NONE .. hon .. on
end
"""

# The change feed: the commit's log entries, past any entry already at its revision, undone if one fails.
_COMMIT_ANNOUNCE = _fill(
    r"""
-- The change feed, added before any data write: one entry per commit in 'log' (its token, and its
-- object changes if any), and one per touched topic in that topic's log. all: the commit's records
-- in order; topics: each topic's records. A single-object commit (the lean paths) passes its
-- record as all and its topic as topics: no tables to make for them. Then the commit's token,
-- kept (a retry of it finds it applied). Returns the revision the entries were added at, and its
-- string: the commit's writes that follow carry it, and it returns {1, rev}.
--
-- A stream id must pass the stream's last one, so an entry at or past the revision in any of these
-- streams fails its XADD: another writer's (an XADD of its own; '*' ids are milliseconds), or a
-- counter that started again at 1 (deleted, or a server that lost it). Every XADD is a pcall, and
-- the first that fails undoes the ones before it (XDEL of the commit's own id), then the revision
-- continues past the last id of every stream the commit writes (XINFO) and the entries are added
-- again: nothing is asked in the usual case, where every XADD succeeds. The XADDs come before
-- the data writes, which cannot fail (every key written was read first, its type known, or is
-- written with a pcall), so no entry announces a commit that did not happen. Only the keys never
-- read (directory sets, dmr) are written before them. An XADD that fails again (an id past 2^53;
-- a stream of another type, or a 'logs' of another type where a stream is missing, no longer
-- gets here: revision() refuses them before the first write; a 'log0' of another type on this rare
-- path is left unwritten, below) undoes the entries and returns false and the error: the
-- caller undoes its directory sets and raises it, the commit's data unwritten. That refusal still
-- moves the counter, dmr and the last id of a stream that took the entry (none of them can be put
-- back exactly; knowing them before the first write costs every commit a call: see "What a refused
-- commit leaves" in docs/backends/redis.md).
local function announce(rev, all, topics)
  -- One record (a single-object commit) is the feed itself: table.concat would copy it into a
  -- new string, and a string costs Redis's Lua ~11 instructions a byte (it hashes every byte).
  local feed = nil
  if type(all) == 'string' then
    feed, all, topics = all, nil, {[topics] = true}
  elseif #all > 0 then
    feed = #all == 1 and all[1] or table.concat(all)
  end
  local bad, added, made
  -- stop: a key of another type met on the way ('logs'): no retry, the error names it.
  -- own0: whether 'log0' is nbdb's (a hash, or none), once asked (only when an XADD failed).
  local rev0, first, stop, own0 = rev, false, false, nil
  -- skip: the first revision of the jump (see below) that no commit took, when it is below this one.
  -- Also a counter that moved with no commit (another writer's INCR, the namespace's first commit
  -- refused): then 'last' (prior) names a revision below the one before this, or is gone, and only
  -- then is 'log''s last entry asked (an older nbdb's commits write no 'last', only their entries).
  local skip = nil
  local r = prior and tonumber(prior:match('^(%d+) '))
  if rev > 1 and not (r and r >= rev - 1) then
    local top = redis.call('XREVRANGE', P .. 'log', '+', '-', 'COUNT', 1)[1]
    local at = top and tonumber(top[1]:match('^(%d+)')) or 0
    if at < rev - 1 then skip = str(at + 1) end
  end
  for _ = 1, 2 do
    local revs = str(rev)
    local id = revs .. '-0'
    added, made = 0, false  -- the streams that took the entry: 'log', then as many topics in pairs() order
    if skip and feed then
      bad = redis.pcall('XADD', P .. 'log', 'MAXLEN', '~', history, id, 't', token, 'c', feed, 's', skip)
    elseif skip then
      bad = redis.pcall('XADD', P .. 'log', 'MAXLEN', '~', history, id, 't', token, 's', skip)
    elseif feed then
      bad = redis.pcall('XADD', P .. 'log', 'MAXLEN', '~', history, id, 't', token, 'c', feed)
    else
      bad = redis.pcall('XADD', P .. 'log', 'MAXLEN', '~', history, id, 't', token)
    end
    bad = type(bad) == 'table' and bad.err
    if not bad then
      added = 1
      -- Topic logs keep every entry of the last ``history`` revisions (as 'log' does while its
      -- revisions are dense): the watchers' read (LOG_READ_LUA) says which anchors that covers.
      local first = str(math.max(rev - tonumber(history), 0)) .. '-0'
      for topic, recs in pairs(topics) do
        -- A commit of one topic (the usual one) sends 'log' and the topic's log the same string.
        local name, c = P .. 'log:' .. topic, (not all or #recs == #all) and feed or table.concat(recs)
        -- NOMKSTREAM: only the commit that creates a topic's stream adds the topic to 'logs'.
        local got = redis.pcall('XADD', name, 'NOMKSTREAM', 'MINID', '~', first, id, 't', token, 'c', c)
        made = not got and name
        if made then got = redis.pcall('XADD', name, 'MINID', '~', first, id, 't', token, 'c', c) end
        if type(got) == 'table' and got.err then bad = got.err; break end
        -- The stream took the entry: counted before the SADD, whose failure undoes it too
        -- (uncounted, it stayed, and the retry added the commit to the stream a second time).
        added = added + 1
        if made then
          -- revision() found 'logs' a set (or none) when a stream was missing: the SADD refuses
          -- only what no type check foresees (out of memory); undone as the rest.
          got = redis.pcall('SADD', P .. 'logs', topic)
          if type(got) == 'table' and got.err then bad = got.err .. ' (at ' .. P .. 'logs)'; stop = true; break end
          made = false
        end
      end
    end
    if not bad then
      -- The namespace's first commit, landed past revision 1: a watch from 0 finds every change
      -- in 'log' while it starts at or before this one and lost nothing but undone entries.
      if first then redis.call('HSET', P .. 'log0', 'b', revs) end
      -- The TTL as a string: a number argument is formatted again at each call.
      redis.call('SET', P .. 'ct:' .. token, revs, 'PX', '__TTL__')
      -- The head, for reads (see head()): a key of its own, not the entry's copy.
      redis.call('SET', P .. 'last', revs .. ' ' .. token)
      return rev, revs
    end
    -- Undone: the commit's own entries, in the streams that took them (the one that failed may
    -- hold another writer's entry at this very id). pairs() goes in the same order again.
    local names = {P .. 'log'}
    for topic in pairs(topics) do names[#names + 1] = P .. 'log:' .. topic end
    for i = 1, added do redis.call('XDEL', names[i], id) end
    -- A stream this commit made (its topic refused by 'logs'): gone again, as it was.
    if made then redis.call('DEL', made) end
    -- 'log0' (see LOG_READ_LUA): m counts the entries undone in 'log', b the revision of the
    -- namespace's first commit (or of the next one, when it failed). Only this rare path writes it,
    -- and asks its type first (once): another writer's key of another type there failed its
    -- HINCRBY or HSET, a script error after the entries (or their undo) with the data unwritten and
    -- the directory sets not undone; then the commit was refused whole, naming it, after its first
    -- writes (dmr and the counter moved: two writers' damage at once). Now 'log0' is left as it is
    -- and the commit goes on: 'log0' only vouches for a watch from 0, and one that is not nbdb's
    -- vouches for nothing (its m short of the undone entries, such a watch raises
    -- HistoryGoneError, never skips).
    if own0 == nil then
      local t0 = redis.call('TYPE', P .. 'log0').ok
      own0 = t0 == 'hash' or t0 == 'none'
    end
    if own0 and added > 0 then redis.call('HINCRBY', P .. 'log0', 'm', 1) end
    if not own0 then
      first = false
    elseif rev == rev0 and rev0 == 1 then
      -- A counter at 1 is a first commit's, or one another writer deleted: then 'log' still holds
      -- this namespace's commits (an entry of a token and changes, 't' and 'c', at its start or
      -- end; this commit's own is undone above; another writer's entry of a token alone is none),
      -- and b would vouch, to a watch from 0, for a 'log' made again before it (by a commit after
      -- another writer deleted 'log'), every entry at or before b: that watch skipped every change
      -- before them. One XINFO, on this rare path only.
      first = true
      local info = redis.pcall('XINFO', 'STREAM', P .. 'log')
      if not info.err then
        for j = 1, #info, 2 do
          local e = (info[j] == 'first-entry' or info[j] == 'last-entry') and info[j + 1]
          if e and e[2][1] == 't' and e[2][3] == 'c' then first = false end
        end
      end
    elseif rev == rev0 and redis.call('HGET', P .. 'log0', 'b') == revs then
      first = true
    end
    if stop then break end
    local past, after = rev, rev
    for i = 1, #names do
      local info = redis.pcall('XINFO', 'STREAM', names[i])
      if not info.err then  -- a missing stream (an error too) bounds nothing
        for j = 1, #info, 2 do
          if info[j] == 'last-generated-id' then
            local ms = tonumber(info[j + 1]:match('^(%d+)'))
            if ms and ms >= past then past = ms + 1 end
          elseif i == 1 and info[j] == 'last-entry' and type(info[j + 1]) == 'table' and info[j + 1][1] then
            local ms = tonumber(info[j + 1][1]:match('^(%d+)'))
            if ms and ms >= after then after = ms + 1 end
          end
        end
      end
    end
    -- Not an id at or past the revision (or one past what a Lua number holds exactly): no retry.
    if past == rev or past >= 9007199254740992 then break end
    -- Revisions are dense in 'log' (one INCR per commit), so a watcher takes a hole for entries
    -- another writer deleted (XDEL), unless the entry after it says the hole is this jump's: its
    -- field s, the first revision no commit took (past 'log''s last entry: a counter that started
    -- again at 1 vouches for none of the revisions 'log' holds). Only this rare path writes it.
    if after < past then skip = str(math.min(after, tonumber(skip) or after)) end
    rev = past
    redis.call('SET', P .. 'rev', str(rev))
  end
  if first then
    redis.call('HSET', P .. 'log0', 'b', str(tonumber(redis.call('GET', P .. 'rev')) + 1))
  elseif rev0 == 1 then
    redis.call('DEL', P .. 'rev')
  else
    -- The counter given back: a revision no commit took, with no entry telling so (s), is a hole
    -- to the watchers of 'log' (lost_after in logs.py). The next commit takes rev0 again, or,
    -- past an id this one left in a stream, jumps from it and says so.
    redis.call('SET', P .. 'rev', str(rev0 - 1))
  end
  return false, 'ERR nbdb: __UNLOGGED_MARK__: ' .. tostring(bad)
end
""",
    UNLOGGED_MARK=UNLOGGED_MARK,
)

# The lean paths' rule, and one object's update: the first of them, not a function.
_COMMIT_LEAN_UPDATE = _fill(
    r"""
-- One object's update, create or delete (what Database.update, .create and .delete send, the
-- commonest commits) skips the general path's tables (conditions, places, previous states,
-- changes, directory groups, hashes' fields: ~40 % of an update's instructions and more of a
-- create's and a delete's, callgrind). Each makes the reads, checks and writes the general
-- path makes of the same items, in the same order, and shares its revision, change record and
-- feed (revision, record, announce). Anything else, a failed match included, and any state the
-- general path would treat otherwise than as plainly absent or present (a damaged field), goes
-- the general way: a lean path returns nil before its first write, and only reads before that.
-- Object keys are o/<topic>/<table>/<id> (topics, tables and ids hold no '/'); an object and
-- its index i/<table>/<id> share the hash k:i/<table>/<id> (see loc below).
local OKEY = __OKEY__

-- 'v key n' (or 'w key m': last written at revision m) and 'P key value 0' of an object key, n > 0:
-- first, and not a function (the other paths' closures, made at each run of the script, come after it).
if #ARGV == 11 and (ARGV[5] == 'v' or ARGV[5] == 'w') and ARGV[8] == 'P' and ARGV[11] == '0' and ARGV[9] == ARGV[6]
  and OBJ == 'o/' then
  local key, value, expect = ARGV[6], ARGV[10], tonumber(ARGV[7])
  local topic, tbl, oid = key:match(OKEY)
  -- From 2^53 a version is no Lua number exactly (its next one rounds back to it): the general
  -- path's check refuses it.
  if topic and expect and expect > 0 and expect < 9007199254740992 then
    local h = P .. 'k:i/' .. tbl .. '/' .. oid
    -- The object's fields answer only for its topic (see loc).
    local r = redis.call('HMGET', h, 'ov', 'on', 'ot', 'om')
    local ver = r[3] == topic and tonumber(r[2])
    if ARGV[5] == 'w' then
      -- The copy's write, by its revision (the mod revision 'om'): a version from 2^53 fails, as 'v' does.
      if not ver or ver <= 0 or ver >= 9007199254740992 or tonumber(r[4]) ~= expect then return {0} end
    elseif ver ~= expect then
      return {0}
    end
    local vers = str(ver + 1)
    -- Not created nor deleted: no directory set changes; the revision of its directories (as
    -- touched() below, written out: that closure would cost the update more than the line).
    -- Written before the log entries (a key never read: its type is not known; a pcall, as
    -- see the keys a commit writes unread below), and again if they moved the revision.
    local up = 'o/' .. topic .. '/'
    local rev0 = revision(topic)
    local revs = str(rev0)
    local got = redis.pcall('HSET', P .. 'dmr', __OBJECT_DIRS__)
    if got ~= 0 and type(got) == 'table' then
      __REFUSED_DMR__
    end
    -- r[2]: the version as stored, str(ver) (this script wrote it: the same digits).
    local rev
    rev, revs = announce(rev0, record(key, value, vers, r[1], r[2]), topic)
    if not rev then error({err = revs}) end
    if rev ~= rev0 then redis.call('HSET', P .. 'dmr', __OBJECT_DIRS__) end
    redis.call('HSET', h, 'ov', value, 'on', vers, 'om', revs, 'ot', topic)
    return {1, rev}
  end
end
""",
    OKEY=_OKEY,
    OBJECT_DIRS=_OBJECT_DIRS,
    REFUSED_DMR=_refused("P .. 'dmr'"),
)

# The keys the lean paths write unread (directory sets, dmr): a refused write returns its key.
_COMMIT_UNREAD = _fill(
    r"""
-- The keys a commit writes unread (directory sets, dmr: their type is not known) are written before
-- its log entries, each with a pcall: a key that refuses the write (another writer's key of another
-- type) returns that key and the error reply, the writes before it are undone (the same calls
-- reversed, which stop at the same key), the revision is given back and the commit fails with
-- nothing of it written (the lines after the undo, at each such place). The next commit takes the
-- same revision. A reply is looked at (type(), a C call: ~0.5k instructions, callgrind) only when it
-- is not the usual count (dmr's fields exist: 0; one name added or removed: 1); an error reply is a
-- table, which no count equals.

-- The revision of the last change below each of an object key's directories; a refused write
-- returns dmr's key and the error reply.
local function touched(topic, tbl, revs)
  local up = 'o/' .. topic .. '/'
  local got = redis.pcall('HSET', P .. 'dmr', __OBJECT_DIRS__)
  if got ~= 0 and type(got) == 'table' then return P .. 'dmr', got end
end

-- The directory sets of one object key (range root 0) when it is created (SADD) or deleted
-- (SREM): its id in its table's set and, when that made (emptied) the set, the table's name in
-- its topic's set, and so up to '' (the general path's directory groups and climb()).
-- existed: whether the table's set existed before (a create that read it), or nil (unknown).
-- A refused write returns its key and the error reply (an SCARD follows a write of its key).
-- The refusal of a directory set a commit made again while its parent's set still names it: nbdb
-- removes a directory's name in the script that empties it, so another writer deleted the set.
-- (A string, not a function: Lua makes a closure at every run of a script.)
local LOST_SET = ' was missing while its parent\'s set names it; another writer deleted it, and the objects it held'
  .. ' would be in no list'
local function enlist(cmd, topic, tbl, oid, existed)
  local last = cmd == 'SADD' and 1 or 0  -- how many members a set just made (emptied) holds
  local d = P .. 'd:o/' .. topic .. '/' .. tbl .. '/'
  -- oid: an id, or {topic, table, id...} (a transaction's ids in one table's set).
  local n = type(oid) == 'table' and redis.pcall(cmd, d, unpack(oid, 3)) or redis.pcall(cmd, d, oid)
  if n ~= 1 and type(n) == 'table' then return d, n end
  if n == 0 or existed then return end
  if existed == nil and redis.call('SCARD', d) ~= (last == 1 and n or 0) then return end
  d = P .. 'd:o/' .. topic .. '/'
  n = redis.pcall(cmd, d, tbl .. '/')
  if type(n) == 'table' then return d, n end
  -- lost: the level of a set this SADD made whose parent's set named it already (LOST_SET).
  local lost = n == 0 and last == 1 and 2
  if not lost then
    if n == 0 or redis.call('SCARD', d) ~= last then return end
    d = P .. 'd:o/'
    n = redis.pcall(cmd, d, topic .. '/')
    if type(n) == 'table' then return d, n end
    lost = n == 0 and last == 1 and 3
    if not lost then
      if n == 0 or redis.call('SCARD', d) ~= last then return end
      d = P .. 'd:'
      n = redis.pcall(cmd, d, 'o/')
      if type(n) == 'table' then return d, n end
      if n ~= 0 or last ~= 1 then return end
      lost = 4
    end
  end
  -- Another writer deleted that set: made again with these ids alone, it would hide every object
  -- it held from every list, and its parent's name would no longer tell. Refused, with what this
  -- call added taken out again, so that the undo finds nothing to climb from.
  if lost == 4 then redis.call('SREM', P .. 'd:o/', topic .. '/') end
  if lost >= 3 then redis.call('SREM', P .. 'd:o/' .. topic .. '/', tbl .. '/') end
  d = P .. 'd:o/' .. topic .. '/' .. tbl .. '/'
  if type(oid) == 'table' then redis.call('SREM', d, unpack(oid, 3)) else redis.call('SREM', d, oid) end
  if lost == 3 then d = P .. 'd:o/' .. topic .. '/' elseif lost == 4 then d = P .. 'd:o/' end
  return d, {err = 'ERR nbdb: the directory set ' .. d .. LOST_SET}
end
""",
    OBJECT_DIRS=_OBJECT_DIRS,
)

# One object's delete.
_COMMIT_LEAN_DELETE = _fill(
    r"""
-- 'v key n' (n > 0, or 'w key m'), 'K key' of an object key (no referrer left, the delete of the
-- object and of its index: 'p r/<table>/<id>/ 0', 'D key 0', 'D i/<table>/<id> -1' in one item, 2
-- arguments for 9), then 'D' of its reverse references (r/...) and unique claims (u/... -1),
-- which, like the index, are removed unread (see 'blind' in the general path), or 'X u/... id' of a
-- released claim: removed if it still names that id (one HMGET each), else the commit fails ({0}).
local function delete()
  local nargs = #ARGV
  if ARGV[8] ~= 'K' or ARGV[9] ~= ARGV[6] then return end
  local key, expect = ARGV[6], tonumber(ARGV[7])
  local topic, tbl, oid = key:match(OKEY)
  if not (topic and expect and expect > 0 and expect < 9007199254740992) then return end
  -- held: the released claims ('X u/... id'), each deleted only if it still names this object.
  local drops, held = {}, nil
  for pos = 10, nargs, 3 do
    local kind, k, root = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2]
    local gh, gf = nil, nil
    if kind == 'D' and tonumber(root) then gh, gf = k:match('^(r/[^/]+/[^/]+/)(.+)$') end
    if gh then
      drops[#drops + 1] = {P .. 'k:' .. gh, gf}
    elseif k:sub(1, 2) == 'u/' and (kind == 'X' or (kind == 'D' and root == '-1')) then
      drops[#drops + 1] = {P .. 'k:' .. k, 'v', 'n', 'm'}
      if kind == 'X' then
        if not held then held = {} end
        held[#held + 1] = {P .. 'k:' .. k, root}
      end
    else
      return
    end
  end
  local h = P .. 'k:i/' .. tbl .. '/' .. oid
  local r = redis.call('HMGET', h, 'ov', 'on', 'ot', 'om')
  if ARGV[5] == 'w' then  -- 'w key m': the object's last write was at revision m
    if not (r[3] == topic and tonumber(r[2])) or tonumber(r[4]) ~= expect then return {0} end
  elseif (r[3] == topic and tonumber(r[2])) ~= expect then
    return {0}
  end
  if held then
    for i = 1, #held do
      local c = redis.call('HMGET', held[i][1], 'v', 'n')
      if not c[2] or c[1] ~= held[i][2] then return {0} end
    end
  end
  -- The referrers' hash (none left) and the topic's stream (named twice: count // 2 whether it
  -- exists, see revision) in one EXISTS.
  local s = P .. 'log:' .. topic
  local count = redis.call('EXISTS', P .. 'k:r/' .. tbl .. '/' .. oid .. '/', s, s)
  if count % 2 == 1 then return {0} end
  local rev0 = revision(topic, count == 0)
  -- The keys not read first (their type unknown) before the log entries (see announce).
  local bad, got = enlist('SREM', topic, tbl, oid)
  if not bad then bad, got = touched(topic, tbl, str(rev0)) end
  if bad then
    enlist('SADD', topic, tbl, oid)
    __REFUSED_AT__
  end
  local rev, revs = announce(rev0, record(key, false, '0', r[1], r[2]), topic)
  if not rev then
    enlist('SADD', topic, tbl, oid)
    error({err = revs})
  end
  if rev ~= rev0 then touched(topic, tbl, revs) end
  redis.call('HDEL', h, 'ov', 'on', 'om', 'ot', 'v', 'n', 'm')
  -- Unread: a foreign key of another type there holds nothing of nbdb's (see the general path).
  for i = 1, #drops do redis.pcall('HDEL', unpack(drops[i])) end
  return {1, rev}
end
""",
    REFUSED_AT=_refused("bad"),
)

# One object's create, or a transaction of creates.
_COMMIT_LEAN_CREATE = _fill(
    r"""
-- 'e' of each referenced object, then of each object created 'O key value index' of its object key
-- (its put and its index's: 'P key value 0' and 'C i/<table>/<id> index -1' in one item, 4
-- arguments for 8), then 'P' of their reverse references (r/...) and 'C' of their
-- unique claims (u/... -1): one object's create (Database.create) or a transaction of creates
-- (a transaction's items come in this order). An object named twice goes the general way.
local function create()
  local nargs, pos = #ARGV, 5
  local targets = {}
  while ARGV[pos] == 'e' do
    local t, ttbl, tid = ARGV[pos + 1]:match(OKEY)
    if not t then return end
    targets[#targets + 1] = {P .. 'k:i/' .. ttbl .. '/' .. tid, t}
    pos = pos + 2
  end
  -- objs[i]: {key, value, index, topic, table, id, hash}
  local objs = {}
  while ARGV[pos] == 'O' do
    local key = ARGV[pos + 1]
    local topic, tbl, oid = key:match(OKEY)
    if not topic then return end
    objs[#objs + 1] = {key, ARGV[pos + 2], ARGV[pos + 3], topic, tbl, oid, P .. 'k:i/' .. tbl .. '/' .. oid}
    pos = pos + 4
  end
  if #objs == 0 then return end
  if #objs > 1 then
    -- An object twice (its hash put twice) goes the general way. A reference or a claim named
    -- twice needs nothing: here as there, both are read alike and the later write wins.
    local seen = {}
    for i = 1, #objs do
      local h = objs[i][7]
      if seen[h] then return end
      seen[h] = true
    end
  end
  -- refs[i]: {hash, field, value, version}. A transaction's are grouped by hash (its objects
  -- mostly name the same targets): rhashes, each hash's refs in order of first use. One
  -- object's are read and written one by one (grouping cost a create more than it saves).
  local refs, claims, one = {}, {}, #objs == 1
  local rhashes, byhash = (not one) and {} or nil, (not one) and {} or nil
  while ARGV[pos] == 'P' and ARGV[pos + 3] do
    local gh, gf = ARGV[pos + 1]:match('^(r/[^/]+/[^/]+/)(.+)$')
    if not gh then return end
    local f = {P .. 'k:' .. gh, gf, ARGV[pos + 2]}
    refs[#refs + 1] = f
    if not one then
      local group = byhash[f[1]]
      if not group then group = {}; byhash[f[1]] = group; rhashes[#rhashes + 1] = f[1] end
      group[#group + 1] = f
    end
    pos = pos + 4
  end
  while ARGV[pos] == 'C' and ARGV[pos + 3] == '-1' and ARGV[pos + 1]:sub(1, 2) == 'u/' do
    claims[#claims + 1] = {P .. 'k:' .. ARGV[pos + 1], ARGV[pos + 2]}
    pos = pos + 4
  end
  -- At most 500 keys in one EXISTS and 2,000 fields in one HMGET (Lua's unpack returns at
  -- most ~8,000 values); a larger transaction goes the general way, which slices them.
  if pos ~= nargs + 1 or #objs + #claims > 500 or #refs > 2000 then return end
  -- Reads in the general path's order: the reverse references' versions (one HMGET per hash),
  -- the absent hashes at once (if more than one), then the conditions in order.
  if one then
    for i = 1, #refs do
      local f = refs[i]
      local packed = redis.call('HMGET', f[1], f[2])[1]
      f[4] = packed and struct.unpack('>i4>i8', packed) or 0
    end
  else
    for i = 1, #rhashes do
      local group = byhash[rhashes[i]]
      local fields = {}
      for j = 1, #group do fields[j] = group[j][2] end
      local got = redis.call('HMGET', rhashes[i], unpack(fields))
      for j = 1, #group do
        local packed = got[j]
        group[j][4] = packed and struct.unpack('>i4>i8', packed) or 0
      end
    end
  end
  local absent, existed, missing = false, nil, nil
  local hs = {}
  for i = 1, #objs do hs[i] = objs[i][7] end
  for i = 1, #claims do hs[#hs + 1] = claims[i][1] end
  if one then
    -- One object: its table's directory set and its topic's stream are asked in the same EXISTS
    -- (it saves the SCARD after the SADD that would tell whether the SADD made it, and the count
    -- of the stream, see revision). EXISTS counts a key named m times m times: with the set
    -- named m = #hs + 1 times (more than the other keys can add up to) and the stream named
    -- 2m times (more than all of those), count // 2m says whether the stream exists,
    -- count % 2m // m whether the set does, and count % m how many of the others do. (An
    -- object without claims asked its hash with HMGET, then SCARD after the SADD: one call more.)
    local n, o = #hs, objs[1]
    local m = n + 1
    local d, s = P .. 'd:o/' .. o[4] .. '/' .. o[5] .. '/', P .. 'log:' .. o[4]
    for i = 1, m do hs[n + i] = d end
    for i = 1, 2 * m do hs[n + m + i] = s end
    local count = redis.call('EXISTS', unpack(hs))
    missing = count < 2 * m
    count = count % (2 * m)
    absent, existed = count % m == 0, count >= m
  elseif #hs > 1 then
    absent = redis.call('EXISTS', unpack(hs)) == 0
  end
  for i = 1, #targets do
    if redis.call('HGET', targets[i][1], 'ot') ~= targets[i][2] then return {0} end
  end
  -- Taken: {0}. Absent: no field at all (a field without the others is the general path's).
  if not absent then
    for i = 1, #objs do
      local r = redis.call('HMGET', objs[i][7], 'v', 'n', 'ov', 'on', 'ot')
      if r[2] then
        local n = tonumber(r[2])
        if n and n ~= 0 then return {0} end
        return
      end
      if r[1] or r[3] or r[4] or r[5] then return end
    end
    for i = 1, #claims do
      local c = redis.call('HMGET', claims[i][1], 'v', 'n')
      if c[2] then
        local n = tonumber(c[2])
        if n and n ~= 0 then return {0} end
        return
      end
    end
  end
  local streams = objs[1][4]
  if #objs > 1 then
    -- The topics' streams in one EXISTS, each named once: missing if one is not there.
    -- All objects in one table (the usual transaction): that table's directory set named
    -- #topics + 1 = 2 times in it too, count // 2 whether it exists (it saves the SCARD after
    -- its SADD).
    streams = {}
    local names, t1, tbl1 = {}, objs[1][4], objs[1][5]
    local d = true
    for i = 1, #objs do
      local t = objs[i][4]
      if not streams[t] then streams[t] = true; names[#names + 1] = P .. 'log:' .. t end
      if t ~= t1 or objs[i][5] ~= tbl1 then d = false end
    end
    if d then names[2] = P .. 'd:o/' .. t1 .. '/' .. tbl1 .. '/'; names[3] = names[2] end
    local count = redis.call('EXISTS', unpack(names))
    if d then existed = count >= 2; count = count % 2 end
    missing = count < #names - (d and 2 or 0)
  end
  local rev0 = revision(streams, missing)
  -- The keys not read first (directory sets, dmr) before the log entries (see announce), the
  -- rest after them.
  local dirs, bad, got, upto = nil, nil, nil, 0
  if #objs == 1 then
    local o = objs[1]
    bad, got = enlist('SADD', o[4], o[5], o[6], existed)
  else
    -- Each table's new ids in one SADD (in order of first use, as the general path's groups).
    local ids = {}
    dirs = {}
    for i = 1, #objs do
      local o = objs[i]
      local d = o[4] .. '/' .. o[5]
      local list = ids[d]
      if not list then list = {o[4], o[5]}; ids[d] = list; dirs[#dirs + 1] = list end
      list[#list + 1] = o[6]
    end
    for i = 1, #dirs do
      local list = dirs[i]
      upto = i
      bad, got = enlist('SADD', list[1], list[2], list, existed)
      if bad then break end
    end
  end
  -- The commit failed: its new ids out of their directories again (upto: the tables that took them,
  -- or began to), then the log did not take it (msg, see announce), or a key written unread refused
  -- a write (bad, the key, got, the error reply: see the keys a commit writes unread). Its arguments
  -- are its only new upvalues: a closure's upvalue costs each run of the script.
  local function fail(msg, upto, bad, got, rev0)
    if dirs then
      for i = upto, 1, -1 do enlist('SREM', dirs[i][1], dirs[i][2], dirs[i], nil) end
    else
      enlist('SREM', objs[1][4], objs[1][5], objs[1][6])
    end
    if bad then __REFUSED_AT__ end
    error({err = msg})
  end
  if bad then fail(nil, upto, bad, got, rev0) end
  local rev, revs
  if #objs == 1 then
    local o = objs[1]
    bad, got = touched(o[4], o[5], str(rev0))
    if bad then fail(nil, 0, bad, got, rev0) end
    rev, revs = announce(rev0, record(o[1], o[2], '1', false, '0'), o[4])
    if not rev then fail(revs, 0) end
    if rev ~= rev0 then touched(o[4], o[5], revs) end
  else
    -- The directories' revisions in one HSET; the records in order, and by topic.
    local marks, done, all, topics = {}, {}, {}, {}
    revs = str(rev0)
    for i = 1, #objs do
      local o = objs[i]
      local topic = o[4]
      local d = 'o/' .. topic .. '/' .. o[5] .. '/'
      if not done[d] then
        done[d] = true
        marks[#marks + 1] = d
        marks[#marks + 1] = revs
        local up = 'o/' .. topic .. '/'
        if not done[up] then done[up] = true; marks[#marks + 1] = up; marks[#marks + 1] = revs end
      end
      local rec = record(o[1], o[2], '1', false, '0')
      all[i] = rec
      local recs = topics[topic]
      if not recs then recs = {}; topics[topic] = recs end
      recs[#recs + 1] = rec
    end
    marks[#marks + 1] = 'o/'; marks[#marks + 1] = revs; marks[#marks + 1] = ''; marks[#marks + 1] = revs
    got = redis.pcall('HSET', P .. 'dmr', unpack(marks))
    if got ~= 0 and type(got) == 'table' then fail(nil, #dirs, P .. 'dmr', got, rev0) end
    rev, revs = announce(rev0, all, topics)
    if not rev then fail(revs, #dirs) end
    if rev ~= rev0 then
      for j = 2, #marks, 2 do marks[j] = revs end
      redis.call('HSET', P .. 'dmr', unpack(marks))
    end
  end
  for i = 1, #objs do
    local o = objs[i]
    redis.call('HSET', o[7], 'ov', o[2], 'on', '1', 'om', revs, 'ot', o[4], 'v', o[3], 'n', '1', 'm', revs)
  end
  if one then
    for i = 1, #refs do
      local f = refs[i]
      redis.call('HSET', f[1], f[2], struct.pack('>i4>i8', f[4] + 1, rev) .. f[3])
    end
  else
    for i = 1, #rhashes do
      local group = byhash[rhashes[i]]
      local args = {}
      for j = 1, #group do
        local f = group[j]
        args[2 * j - 1] = f[2]
        args[2 * j] = struct.pack('>i4>i8', f[4] + 1, rev) .. f[3]
      end
      redis.call('HSET', rhashes[i], unpack(args))
    end
  end
  for i = 1, #claims do redis.call('HSET', claims[i][1], 'v', claims[i][2], 'n', '1', 'm', revs) end
  return {1, rev}
end
""",
    REFUSED_AT=_refused("bad"),
)

# Which lean path a commit takes, if any (else the general path below).
_COMMIT_LEAN_DISPATCH = r"""
if OBJ == 'o/' then
  local kind, got = ARGV[5], nil
  if kind == 'v' or kind == 'w' then
    got = delete()
  elseif kind == 'O' or kind == 'e' then
    got = create()
  end
  if got then return got end
end

"""

# The general path: calls in slices of 1,000 values (Lua's unpack limit).
_COMMIT_SLICES = r"""
-- redis.call(cmd[, first], ...list), in slices of 1,000 (Lua's unpack returns at most ~8,000
-- values): the sum of the replies. For calls whose reply is a count (EXISTS; enter() below slices
-- its SADD and SREM the same way, with pcall).
local function summed(cmd, first, list)
  local total = 0
  for i = 1, #list, 1000 do
    local j = math.min(i + 999, #list)
    if first then
      total = total + redis.call(cmd, first, unpack(list, i, j))
    else
      total = total + redis.call(cmd, unpack(list, i, j))
    end
  end
  return total
end

-- call(cmd, key, ...list) in slices of 1,000 values (an even number: field-value pairs stay
-- whole), for the same reason: the items of the replies, in order (HMGET's values).
local function sliced(call, cmd, key, list)
  if #list <= 1000 then return call(cmd, key, unpack(list)) end
  local out = {}
  for i = 1, #list, 1000 do
    local got = call(cmd, key, unpack(list, i, math.min(i + 999, #list)))
    if type(got) == 'table' then
      for k = 1, #got do out[#out + 1] = got[k] end
    end
  end
  return out
end
"""

# The general path: the commit's items (conditions, puts, deletes).
_COMMIT_ITEMS = r"""
local conds, puts, dels = {}, {}, {}
local pos, nargs = 5, #ARGV
while pos <= nargs do
  local kind = ARGV[pos]
  if kind == 'P' then
    puts[#puts + 1] = {ARGV[pos + 1], ARGV[pos + 2], tonumber(ARGV[pos + 3])}
    pos = pos + 4
  elseif kind == 'C' then
    -- A put of a key expected absent: the put and its condition 'v key 0' in one item.
    local key = ARGV[pos + 1]
    puts[#puts + 1] = {key, ARGV[pos + 2], tonumber(ARGV[pos + 3])}
    conds[#conds + 1] = {'v', key, '0'}
    pos = pos + 4
  elseif kind == 'D' then
    dels[#dels + 1] = {ARGV[pos + 1], tonumber(ARGV[pos + 2])}
    pos = pos + 3
  elseif kind == 'e' then
    -- 'e key': the key exists (no second field).
    conds[#conds + 1] = {'e', ARGV[pos + 1], ''}
    pos = pos + 2
  elseif kind == 'O' or kind == 'K' then
    -- An object's put and its index's ('O key value index': 'P key value 0', 'C i/<table>/<id>
    -- index -1'), or no referrer left and their deletes ('K key': 'p r/<table>/<id>/ 0',
    -- 'D key 0', 'D i/<table>/<id> -1'), in one item.
    local key = ARGV[pos + 1]
    local _, tbl, oid = key:match(OKEY)
    if not tbl then error({err = 'ERR nbdb: item ' .. kind .. ' of ' .. key .. ', not an object key'}) end
    local index = 'i/' .. tbl .. '/' .. oid
    if kind == 'O' then
      puts[#puts + 1] = {key, ARGV[pos + 2], 0}
      puts[#puts + 1] = {index, ARGV[pos + 3], -1}
      conds[#conds + 1] = {'v', index, '0'}
      pos = pos + 4
    else
      conds[#conds + 1] = {'p', 'r/' .. tbl .. '/' .. oid .. '/', '0'}
      dels[#dels + 1] = {key, 0}
      dels[#dels + 1] = {index, -1}
      pos = pos + 2
    end
  elseif kind == 'X' then
    -- A released unique claim (never ranged): its condition 'x key value' and its delete in one item.
    local key = ARGV[pos + 1]
    conds[#conds + 1] = {'x', key, ARGV[pos + 2]}
    dels[#dels + 1] = {key, -1}
    pos = pos + 3
  else
    conds[#conds + 1] = {kind, ARGV[pos + 1], ARGV[pos + 2]}
    pos = pos + 3
  end
end
"""

# The general path: where each key lives, its directory and the directory above one, worked out once.
_COMMIT_PLACES = r"""
-- Where each key of the commit lives, worked out once per key, not at each of its reads
-- and writes (a pattern match costs the script ~0.3 us): {hash, value field, version
-- field, revision field, topic, referrers' hash, field in it, and an object key's table
-- and id}.
local places = {}
local function place(key)
  local w = places[key]
  if not w then
    local gh, gf = gkey(key)
    if gh then
      w = {gh, false, false, false, false, gh, gf, false, false}
    else
      local h, vf, nf, mf, topic, tbl, id = loc(key)
      w = {h, vf, nf, mf, topic, false, false, tbl or false, id or false}
    end
    places[key] = w
  end
  return w
end
-- The directory holding a key and its name in it (split(key)); for an object key from what
-- place() matched: split() cost a commit as much as two HGETs per call (callgrind), and the
-- directory bookkeeping called it five times per object.
local odirs, uplinks = {}, {['o/'] = ''}
local function dir_of(key)
  local w = place(key)
  local tbl = w[8]
  if tbl then
    local topic = w[5]
    local bytopic = odirs[topic]
    if not bytopic then
      bytopic = {}
      odirs[topic] = bytopic
      local up = 'o/' .. topic .. '/'
      bytopic[1] = up
      uplinks[up] = 'o/'
    end
    local d = bytopic[tbl]
    if not d then d = bytopic[1] .. tbl .. '/'; bytopic[tbl] = d; uplinks[d] = bytopic[1] end
    return d, w[9]
  end
  return split(key)
end
-- The directory above a directory (split(dir)): o/<topic>/<table>/ -> o/<topic>/ -> o/ -> ''.
-- An object directory's chain is noted as dir_of makes it (no pattern matches: each costs a
-- commit ~2-6k instructions, and every object commit climbs the chain for dmr).
local function parent_of(dir)
  local up = uplinks[dir]
  if up then return up end
  local topic = dir:match('^o/([^/]*)/[^/]+/$')
  if topic then return 'o/' .. topic .. '/' end
  if dir:match('^o/[^/]*/$') then return 'o/' end
  if dir == 'o/' then return '' end
  return (split(dir))
end"""

# The general path, pass 1: every previous state read once, before any write.
_COMMIT_READS = r"""
-- Every key's previous state is read once (HMGET), for its condition and for its
-- change record alike, and before anything is written, so that a failing read (a
-- foreign key of the wrong type) aborts with nothing written.
local cur, changes, rows = {}, {}, {}
-- Reverse references: every field the commit names, one HMGET per target's hash.
local gwant, graw = {}, {}
local function want(key)
  local w = place(key)
  local h, f = w[6], w[7]
  if h then
    if not gwant[h] then gwant[h] = {} end
    table.insert(gwant[h], f)
  end
end
-- A delete of a key that no condition or put names, that is never ranged and that the
-- change feed does not carry (a unique claim, a reverse reference) needs no read: its
-- fields are removed whether or not they are there (a released claim, a dropped referrer).
local named, blind, UNREAD = {}, {}, {false, 0}
for i = 1, #conds do
  local c = conds[i]
  if c[1] == 'v' or c[1] == 'e' or c[1] == 'x' then named[c[2]] = true; want(c[2]) end
end
for i = 1, #puts do local key = puts[i][1]; named[key] = true; want(key) end
for i = 1, #dels do
  local d = dels[i]
  local key = d[1]
  if not named[key] and (d[2] < 0 or place(key)[6]) and key:sub(1, #OBJ) ~= OBJ then
    blind[key] = true
  else
    want(key)
  end
end
for h, fields in pairs(gwant) do
  local got, byfield = sliced(redis.call, 'HMGET', h, fields), {}
  for i = 1, #fields do byfield[fields[i]] = got[i] end
  graw[h] = byfield
end
-- A create expects its keys absent (conditions 'v' on version 0). When no hash of those
-- keys exists, one EXISTS answers for all of them (and for every other key of those hashes)
-- instead of one HMGET per hash: a transaction of creates read 2 hashes per object. If any
-- exists, each is read by its HMGET below, as before. An absent key has no type to refuse.
do
  local absent, seen, n = nil, nil, 0
  for i = 1, #conds do
    local c = conds[i]
    if c[1] == 'v' and c[3] == '0' then
      local w = place(c[2])
      local h = w[1]
      if not w[6] then
        if not seen then absent, seen = {}, {} end
        if not seen[h] then seen[h] = true; n = n + 1; absent[n] = h end
      end
    end
  end
  if n > 1 and summed('EXISTS', nil, absent) == 0 then
    local none = {}
    for i = 1, n do rows[absent[i]] = none end
  end
end
local function load(key)
  local s = cur[key]
  if s == nil then
    local w = place(key)
    local gh, gf = w[6], w[7]
    if gh then
      local u = ungroup(graw[gh][gf])
      s = u and {u[1], u[2]} or false
      cur[key] = s
      return s
    end
    local h, topic = w[1], w[5]
    -- One HMGET per hash serves an object and its index alike.
    local r = rows[h]
    if r == nil then
      r = redis.call('HMGET', h, 'v', 'n', 'ov', 'on', 'ot')
      rows[h] = r
    end
    if not topic then
      s = r[2] and {r[1], tonumber(r[2])} or false
    else
      s = (r[4] and r[5] == topic) and {r[3], tonumber(r[4])} or false
    end
    cur[key] = s
  end
  return s
end
"""

# The general path, pass 1: the conditions ({0} if one fails).
_COMMIT_CONDITIONS = r"""
for i = 1, #conds do
  local c = conds[i]
  local kind, a, b = c[1], c[2], c[3]
  if kind == 'v' then
    local s, n = load(a), tonumber(b)
    -- A version from 2^53 (another writer's) fails its check: Lua numbers are doubles, so both sides
    -- rounded alike and the next version rounded back to the same digits (an update that stored its
    -- version again, and a second writer of the same copy that won too). The caller's read of it
    -- reports it as damaged.
    if (s and s[2] or 0) ~= n or n >= 9007199254740992 then return {0} end
  elseif kind == 'e' then
    if cur[a] == nil then
      local w = place(a)
      local h, nf, topic = w[1], w[3], w[5]
      if w[6] then
        if not load(a) then return {0} end
      elseif topic then
        if redis.call('HGET', h, 'ot') ~= topic then return {0} end
      elseif redis.call('HEXISTS', h, nf) == 0 then
        return {0}
      end
    elseif not cur[a] then
      return {0}
    end
  elseif kind == 'l' then
    if redis.call('GET', a) ~= b then return {0} end
  elseif kind == 'x' then
    -- The key holds the value b (a released claim still names the object releasing it).
    local s = load(a)
    if not s or s[1] ~= b then return {0} end
  elseif kind == 'w' then
    -- The key holds a value (of the topic its key names) last written at revision b (its mod revision field).
    local w = place(a)
    if w[6] or not w[4] or not load(a) or tonumber(redis.call('HGET', w[1], w[4])) ~= tonumber(b) then
      return {0}
    end
  else
    local since = tonumber(b)
    local gh, filter = group(a)
    if gh and filter == '' and since == 0 then
      if redis.call('EXISTS', gh) == 1 then return {0} end
    elseif gh then
      local all = redis.pcall('HGETALL', gh)
    if all.err then return foreign(gh) end
      for i = 1, #all, 2 do
        if all[i]:sub(1, #filter) == filter and ungroup(all[i + 1])[3] > since then return {0} end
      end
    end
    local ok = gh or walk(a, function(key)
      local h, _, _, mf, topic = loc(key)
      local r = redis.call('HMGET', h, mf, 'ot')
      return topic and r[2] ~= topic or (tonumber(r[1]) or 0) <= since
    end)
    if not ok then return {0} end
  end
end
"""

# The general path, pass 1: the changes (a key put and deleted ends deleted).
_COMMIT_CHANGES = r"""
local dropped = {}
for i = 1, #dels do dropped[dels[i][1]] = true end
for i = 1, #puts do
  local kv = puts[i]
  -- A key both put and deleted ends deleted (as in every other store of the family).
  if not dropped[kv[1]] then
    local s = load(kv[1])
    local ver = s and (s[2] + 1) or 1
    changes[#changes + 1] = {kv[1], kv[2], ver, s and s[1] or false, s and s[2] or 0, kv[3]}
  end
end
for i = 1, #dels do
  local d = dels[i]
  local s = blind[d[1]] and UNREAD or load(d[1])
  if s then
    changes[#changes + 1] = {d[1], false, 0, s[1], s[2], d[2], s == UNREAD}
    cur[d[1]] = false
  end
end
"""

# The general path, pass 2: the revision, the directory sets and dmr (written unread: refused writes undone).
_COMMIT_DIRECTORIES = _fill(
    r"""
-- The change feed: one entry per commit in 'log' (its token, and its object changes if any),
-- and one per touched topic in that topic's log.
local all, topics = {}, {}
-- A key loc() matched as o/<topic>/<table>/<id> is an object's when OBJ is 'o/' (no key prefix).
local plain = OBJ == 'o/'
for i = 1, #changes do
  local c = changes[i]
  local w = place(c[1])
  if (plain and w[8]) or c[1]:sub(1, #OBJ) == OBJ then
    local rec = record(c[1], c[2], c[3], c[4], c[5])
    all[#all + 1] = rec
    local topic = w[5] or c[1]:sub(#OBJ + 1):match('^([^/]*)/')
    if topic then
      if not topics[topic] then topics[topic] = {} end
      table.insert(topics[topic], rec)
    end
  end
end
-- (Before the revision: its streams' types are checked there, before the commit's first write.)
local rev0 = revision(topics)

-- Pass 2: the writes. First those of keys not read in pass 1 (their type unknown: a foreign key
-- of another type refuses its write, and the commit is undone, see refuse): the directories of the
-- keys that are ever ranged and their revisions (dmr). Then the log entries (see announce), then
-- the keys read in pass 1.
local dirs, ndirs, made = {}, 0, {}
local groups, ngroups, byroot = nil, 0, nil
local forward = true  -- not restoring: a set made again under a parent naming it is refused (see climb)
for i = 1, #changes do
  local c = changes[i]
  local key, root = c[1], c[6]
  if place(key)[6] then root = -1 end  -- a referrers' hash is the directory
  local d, name
  if root >= 0 and (c[5] == 0 or not c[2]) then
    -- Directory entries are added (removed) per directory, one SADD (SREM) of all the
    -- commit's names in it: see below.
    d, name = dir_of(key)
    -- Grouped by whether it adds, its root and its directory (one table per root seen).
    if not groups then groups, byroot = {}, {} end
    local gkey = c[2] and root or -2 - root
    local bydir = byroot[gkey]
    if not bydir then bydir = {}; byroot[gkey] = bydir end
    local g = bydir[d]
    if not g then
      g = {c[2] and true or false, d, root, {}}
      bydir[d] = g
      ngroups = ngroups + 1
      groups[ngroups] = g
    end
    local names = g[4]
    names[#names + 1] = name
  end
  if root == 0 then
    -- The revision of the last change below each directory validates batched lists.
    -- A directory already counted came with its ancestors: stop there (most keys of a
    -- commit share their directory, and split() is the costly part).
    local path = d or dir_of(key)
    while not dirs[path] do
      dirs[path] = true
      ndirs = ndirs + 1
      if path == '' then break end
      path = parent_of(path)
    end
  end
end
-- The directory sets: a directory's new names in one SADD (its removed ones in one SREM),
-- then, if that made the directory (emptied it), its entry in its parent, and so up, one
-- name at a time. Puts come before deletes, and so do their groups. A directory this commit
-- already added to exists, and so do its ancestors: no SCARD for it again. A refused write
-- returns its key and the error reply (see refuse; an SCARD follows a write of its key).
local function climb(path, root, adding)
  local added = nil  -- (adding) the sets this climb added a name to, each with it
  while path ~= '' do
    local d, name = split(path)
    local dk = P .. 'd:' .. d
    if adding then
      local n = redis.pcall('SADD', dk, name)
      if type(n) == 'table' then return dk, n end
      -- path's set was just made (by the names of the commit, or of this climb): its parent
      -- naming it already means another writer deleted it (LOST_SET). The names this climb
      -- added are taken out again (the caller takes out its own), and false says so.
      if n == 0 and forward then
        for i = added and #added or 0, 1, -1 do redis.call('SREM', added[i][1], added[i][2]) end
        return P .. 'd:' .. path, false
      end
      if n == 0 or made[dk] or #d <= root then return end
      added = added or {}
      added[#added + 1] = {dk, name}
      made[dk] = true
      if redis.call('SCARD', dk) > 1 then return end
    else
      local n = redis.pcall('SREM', dk, name)
      if type(n) == 'table' then return dk, n end
      if n == 0 or #d <= root or redis.call('SCARD', dk) > 0 then return end
    end
    path = d
  end
end
local function enter(adding, d, root, names)
  local dk = P .. 'd:' .. d
  local cmd, n = adding and 'SADD' or 'SREM', 0
  -- In slices of 1,000 names (see summed).
  for i = 1, #names, 1000 do
    local got = redis.pcall(cmd, dk, unpack(names, i, math.min(i + 999, #names)))
    if type(got) == 'table' then return dk, got end
    n = n + got
  end
  if adding then
    -- The directory was new if it holds no more than what was just added to it.
    if n > 0 and not made[dk] and #d > root then
      made[dk] = true
      if redis.call('SCARD', dk) == n then
        local bad, got = climb(d, root, true)
        if got == false then
          -- A set made again under a parent naming it: its names out again (the undo then finds
          -- nothing here to climb from), and the commit refused naming it.
          sliced(redis.call, 'SREM', dk, names)
          return dk, {err = 'ERR nbdb: the directory set ' .. dk .. LOST_SET}
        end
        return bad, got
      end
    end
  elseif n > 0 and #d > root and redis.call('SCARD', dk) == 0 then
    return climb(d, root, false)
  end
end
-- Every directory set as it was, the groups upto..1 undone (a name added was a key created, a name
-- removed a key that existed); a group that stopped at a refused write is undone up to that key.
local function restore(upto)
  made, forward = {}, false
  for i = upto, 1, -1 do
    local g = groups[i]
    enter(not g[1], g[2], g[3], g[4])
  end
end
for i = 1, ngroups do
  local g = groups[i]
  local bad, got = enter(g[1], g[2], g[3], g[4])
  if bad then
    restore(i)
    __REFUSED_AT__
  end
end
local args = nil
if ndirs > 0 then
  args = {}
  local revs = str(rev0)
  for d in pairs(dirs) do
    args[#args + 1] = d
    args[#args + 1] = revs
  end
  -- In slices past 1,000 values (see sliced); all of one key, so only the first can be refused.
  local got = #args > 1000 and redis.pcall('HSET', P .. 'dmr', unpack(args, 1, 1000))
    or redis.pcall('HSET', P .. 'dmr', unpack(args))
  if got ~= 0 and type(got) == 'table' then
    restore(ngroups)
    __REFUSED_DMR__
  end
  for i = 1001, #args, 1000 do redis.call('HSET', P .. 'dmr', unpack(args, i, math.min(i + 999, #args))) end
end
""",
    REFUSED_AT=_refused("bad"),
    REFUSED_DMR=_refused("P .. 'dmr'"),
)

# The general path, pass 2: the log entries (see announce).
_COMMIT_FEED = r"""
-- The change feed: its records and topics were made before the revision (see the directories).
local rev, revs = announce(rev0, all, topics)
if not rev then
  -- The log did not take the commit (see announce): every directory set as it was.
  restore(ngroups)
  error({err = revs})
end
if args and rev ~= rev0 then
  for j = 2, #args, 2 do args[j] = revs end
  sliced(redis.call, 'HSET', P .. 'dmr', args)
end
"""

# The general path, pass 2: the hashes read in pass 1, one write each.
_COMMIT_HASHES = r"""
-- The keys read in pass 1: one write per hash (an object and its index share one); an emptied
-- hash is removed by Redis. A hash only deleted from unread (see 'blind') may be a foreign key
-- of another type: not nbdb's, so nothing of the commit's is there; pcall, so that it cannot
-- stop the commit halfway through its writes (every other key was read, so its type is known
-- to fit).
local hashes, sets, unsets, read = {}, {}, {}, {}
for i = 1, #changes do
  local c = changes[i]
  local w = place(c[1])
  local h, vf, nf, mf, topic, gh, gf = w[1], w[2], w[3], w[4], w[5], w[6], w[7]
  if not sets[h] then
    hashes[#hashes + 1] = h
    sets[h] = {}
  end
  if not c[7] then read[h] = true end
  local t = sets[h]
  if not c[2] then
    t = unsets[h]
    if not t then t = {}; unsets[h] = t end
  end
  if gh then
    t[#t + 1] = gf
    if c[2] then t[#t + 1] = struct.pack('>i4>i8', c[3], rev) .. c[2] end
  elseif c[2] then
    t[#t + 1] = vf; t[#t + 1] = c[2]; t[#t + 1] = nf; t[#t + 1] = str(c[3]); t[#t + 1] = mf; t[#t + 1] = revs
    if topic then t[#t + 1] = 'ot'; t[#t + 1] = topic end
  else
    t[#t + 1] = vf; t[#t + 1] = nf; t[#t + 1] = mf
    if topic then t[#t + 1] = 'ot' end
  end
end
for i = 1, #hashes do
  local h = hashes[i]
  if unsets[h] then sliced(read[h] and redis.call or redis.pcall, 'HDEL', h, unsets[h]) end
  if #sets[h] > 0 then sliced(redis.call, 'HSET', h, sets[h]) end
end
return {1, rev}
"""

# ARGV: P, object prefix, token, history, then the commit's items, each a one-letter
# kind followed by its fields, one argument each:
#   v key version | e key '' | p prefix revision     conditions
#   w key revision                                    (the key's last write was at revision)
#   l lease-key token                                 (a lease key is a full Redis key)
#   P key value root                                 a put
#   C key value root                                 a put of a key expected absent
#                                                     (the put and its condition v key 0)
#   D key root                                       a delete
# (Items as arguments, not one length-prefixed blob: Redis makes the Lua strings of
# its arguments in C, where unpacking a blob in Lua cost ~0.4 us per field.)
# ``root`` is the key's range root (see KeyLayout.range_root): -1 never ranged
# (no directory sets), 0 any ancestor, n only directories of n characters or more.
# Returns {1, rev} applied, {2, rev} applied earlier (a retry), {0} a condition
# failed, {3} the token was voided (a settlement decided this commit never applies).
COMMIT_LUA = (
    _LUA_ROOT
    + _COMMIT_DECIDED
    + _COMMIT_REVISION
    + _COMMIT_STR
    + _COMMIT_RECORD
    + _COMMIT_ANNOUNCE
    + _COMMIT_LEAN_UPDATE
    + _COMMIT_UNREAD
    + _COMMIT_LEAN_DELETE
    + _COMMIT_LEAN_CREATE
    + _COMMIT_LEAN_DISPATCH
    + _LUA_PLACES
    + _COMMIT_SLICES
    + _COMMIT_ITEMS
    + _COMMIT_PLACES
    + _COMMIT_READS
    + _COMMIT_CONDITIONS
    + _COMMIT_CHANGES
    + _COMMIT_DIRECTORIES
    + _COMMIT_FEED
    + _COMMIT_HASHES
).replace("__TTL__", str(COMMIT_TOKEN_TTL_MS))

# ARGV: P, limit, cap, prefix*.  Returns {rev, token, 1, rows} if at most ``limit``
# keys (or any number, when every prefix is a target's referrers: one hash read whole),
# rows packing (key, value, version, modrev) per key; else {rev, token, 0,
# names[, topics]}, names packing every key; else, when the directories to walk hold more than
# ``cap`` names, {rev, token, 2, ''[, topics]} at once: the client pages the names (SSCAN) instead
# of one script blocking the server over them all; else, when a directory set (or a
# target's reverse-reference hash) the range reads holds another writer's key of another
# type, {rev, token, 3, key, type}: the client raises CorruptRecordError naming it.
# ``topics`` (with a prefix o/*/<table>/ only) packs the names in d:o/ that the wildcard was
# spelled out with (each '<topic>/'), read in the same script. Fields are length-prefixed (see pack).
RANGE_LUA = (
    _LUA_PRELUDE
    + _LUA_PACK
    + _LUA_LOST
    + r"""
local limit, cap = tonumber(ARGV[2]), tonumber(ARGV[3])
local FOREIGN = 'WRONGTYPE'  -- the version of a record whose key holds foreign data (backend.FOREIGN)
local MISPLACED = 'MISPLACED'  -- the version of an object whose topic field is not its key's (backend.MISPLACED)
local keys, seen, gvals = {}, {}, {}
-- Whether a prefix was walked (directory sets, then an HMGET per key): only then do many keys make
-- the script return their names alone. A target's referrers are one hash, whose HGETALL already
-- holds every value: returned with them, the client read them again with an HMGET each (a
-- cascade's plan of a switch of 40,000 ports: 40,000 HMGETs, a third of the cascade's).
local walked = false
-- Another writer's key of another type where the range reads a set (or a hash): a reply naming it,
-- not the server's WRONGTYPE (which names no key, and failed the range as if a record were corrupt).
local function foreign(key)
  local hr, ht = head()
  return {hr, ht, 3, key, redis.call('TYPE', key).ok}
end
-- A prefix o/*/<table>/ (kvplan.ANY_TOPIC) is that table under each topic d:o/ names now: a scan
-- of one table reads its own keys, not every object's (issue 13).
local prefixes, topics = {}, nil
for j = 4, #ARGV do
  local rest = ARGV[j]:match('^o/%*/(.*)$')
  if rest then
    if not topics then
      topics = redis.pcall('SMEMBERS', P .. 'd:o/')
      if topics.err then return foreign(P .. 'd:o/') end
      local gone = #topics == 0 and lost('o/')
      if gone then return foreign(gone) end
    end
    for _, t in ipairs(topics) do
      if t:sub(-1) == '/' then prefixes[#prefixes + 1] = 'o/' .. t .. rest end
    end
  else
    prefixes[#prefixes + 1] = ARGV[j]
  end
end
-- The topics o/*/ was spelled out with, packed (nil without a wildcard): a read in batches checks
-- and patches those topics' tables, which were every topic of the table at this revision.
local function spelled()
  if not topics then return nil end
  local out = {}
  for _, t in ipairs(topics) do
    if t:sub(-1) == '/' then pack(out, t) end
  end
  return table.concat(out)
end
local later = {}  -- see lost
for j = 1, #prefixes do
  local gh, filter, base = group(prefixes[j])
  if gh then
    local all = redis.pcall('HGETALL', gh)
    if all.err then return foreign(gh) end
    for i = 1, #all, 2 do
      local k = base .. all[i]
      if all[i]:sub(1, #filter) == filter and not seen[k] then
        seen[k] = true; keys[#keys + 1] = k; gvals[k] = all[i + 1]
      end
    end
  else
    -- Given up before a directory whose members would pass cap (see the head of the script), or
    -- that is no set: SCARD asks before SMEMBERS reads it, so the walk meets no other type.
    local bad
    walked = true
    local within = walk(prefixes[j], function(k)
      if not seen[k] then seen[k] = true; keys[#keys + 1] = k end
    end, function(d, named, dir)
      local n = redis.pcall('SCARD', d)
      if type(n) == 'table' then bad = d; return false end
      -- Empty: a directory its parent names is never so (see lost), the walk's first may be.
      if n == 0 then
        bad = named and not dir:find('[\128-\255]') and d or lost(dir, later)
        -- Empty: not read (its SISMEMBER in lost costs what its SMEMBERS did).
        return not bad and 0
      end
      return #keys + n <= cap
    end)
    if bad then return foreign(bad) end
    if not within then
      local hr, ht = head()
      return {hr, ht, 2, '', spelled()}
    end
  end
end
-- The parents of empty first sets that do not name them: one EXISTS of them all (in slices of
-- 1,000), and only if one is gone, each asked again whole (lost). (A paged range returned above:
-- its client asks the sets its pages find empty.)
for i = 1, #later, 1000 do
  local j = math.min(i + 999, #later)
  if redis.call('EXISTS', unpack(later, i, j)) < j - i + 1 then
    for k = i, j do
      if redis.call('EXISTS', later[k]) == 0 then
        local bad = lost(later[k]:sub(#P + 3))
        if bad then return foreign(bad) end
      end
    end
  end
end
local hr, ht = head()
local out = {}
if #keys > limit and walked then
  for _, k in ipairs(keys) do pack(out, k) end
  return {hr, ht, 0, table.concat(out), spelled()}
end
for _, k in ipairs(keys) do
  local v
  if gvals[k] then
    local u = ungroup(gvals[k])
    v = {u[1], tostring(u[2]), tostring(u[3])}
  else
    local h, vf, nf, mf, topic = loc(k)
    v = redis.pcall('HMGET', h, vf, nf, mf, 'ot')
    -- Another writer's key of another type: that record is corrupt (the client reports it), not the range.
    if v.err then v = {false, FOREIGN, false, topic} end
    -- Present under another topic than its directory's: the topic field is damaged (a record of
    -- version MISPLACED, which the client reports as corrupt), not an absent object.
    if topic and v[4] ~= topic then v = v[2] and {v[1], MISPLACED, v[3]} or {} end
  end
  pack(out, k)
  pack(out, v[1])
  pack(out, v[2])
  pack(out, v[3])
end
return {hr, ht, 1, table.concat(out)}
"""
)

# ARGV: P, dir*.  The directories a paged walk found empty (SSCAN of nothing): {key, type} of the
# first that another writer deleted (see lost; or a parent of another type), else false.
LOST_LUA = (
    _LUA_PRELUDE
    + _LUA_LOST
    + r"""
for j = 2, #ARGV do
  if redis.call('EXISTS', P .. 'd:' .. ARGV[j]) == 0 then
    local k = lost(ARGV[j])
    if k then return {k, redis.call('TYPE', k).ok} end
  end
end
return false
"""
)

# ARGV: P, revision. Forget the change history before ``revision`` (exact MINID).
COMPACT_LUA = r"""
local P = ARGV[1]
local min = ARGV[2] .. '-0'
redis.call('XTRIM', P .. 'log', 'MINID', min)
for _, topic in ipairs(redis.call('SMEMBERS', P .. 'logs')) do
  redis.call('XTRIM', P .. 'log:' .. topic, 'MINID', min)
end
return 1
"""

# KEYS: ct:<token>; ARGV: ttl ms.  The revision the token's commit applied at, or
# nil after voiding it (from now on a commit with this token never applies).
VOID_LUA = r"""
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], 'void', 'PX', ARGV[1])
  return false
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])  -- a write for WAIT to count (see the commit script)
if v == 'void' then return false end
return tonumber(v)
"""

# KEYS: lease key; ARGV: token, ttl ms.  1 if the token holds the lease now (taken, or already its own);
# -1 if another writer left the key without an expiry.
ACQUIRE_LUA = r"""
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if v then
  -- Another writer's key without an expiry: nothing frees it, every take waited for it. Reported as damage.
  if redis.call('PTTL', KEYS[1]) == -1 then return -1 end
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: id counter, ct:<token>; ARGV: ttl ms.  INCR exactly once per token.
ALLOCATE_LUA = r"""
local done = redis.call('GET', KEYS[2])
if done then
  redis.call('PEXPIRE', KEYS[2], ARGV[1])  -- a write for WAIT to count (see the commit script)
  return tonumber(done)
end
-- A value nbdb does not write (another writer's: negative, or no whole number) is handed back
-- untouched, in a table, for the client to report; INCR handed out ids below 1 from a negative one.
-- Nor are digits INCR refuses (leading zeros, 2^63 - 1 or more: its own error reached the client as the
-- server's unavailability), nor 2^53 or more: a Lua number (a double) holds the next id exactly only
-- below 2^53 + 1 (from 2^63 - 2 the script returned -2^63; between, an id rounded to one handed out).
local current = redis.call('GET', KEYS[1])
if current and current ~= '0' and not (string.match(current, '^[1-9]%d*$')
    and (#current < 16 or (#current == 16 and current < '9007199254740992'))) then
  return {current}
end
local v = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], v, 'PX', ARGV[1])
return v
"""

REFRESH_LUA = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

RELEASE_LUA = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# ARGV: P, format.  The namespace's stored format: marks an empty (or format 2)
# namespace with ``format`` and returns it; '1' for data of the format before
# the marker (its 'head' or 'clog'), which this version must not read.
FORMAT_LUA = r"""
local P = ARGV[1]
local f = redis.call('GET', P .. 'fmt')
if f then return f end
if redis.call('EXISTS', P .. 'head', P .. 'clog') > 0 then return '1' end
redis.call('SET', P .. 'fmt', ARGV[2])
return ARGV[2]
"""

# ARGV: P.  {revision, token} of the last commit.
HEAD_LUA = (
    _LUA_PRELUDE
    + r"""
local r, t = head()
return {r, t}
"""
)

# ARGV: P, after, limit, history, log*.  One atomic read for a watcher: {head, head
# token, anchor, entries}. ``anchor`` is the token 'log' holds for revision ``after``;
# '' if 'log' does not hold it but holds every commit after it (the head of an empty
# 'log' has no token: see the script); else nil. For ``after`` 0, '' if 'log' still
# starts at revision 1 (or nothing was committed yet), else nil. ``entries`` is XREAD's reply for the logs
# after ``after`` (at most ``limit`` each). A script, not a MULTI, so that only
# the tokens of the head's and the anchor's entries travel, not their changes
# (they may be another topic's).
#
# The anchor in 'log' vouches for 'log' only: 'log' is trimmed by count (MAXLEN ~
# history keeps at least ``history`` entries, and up to a stream node more), a
# topic's stream by revision (each commit's MINID ~ revision - history). Every
# trim removes a stream's oldest entries, so a topic's stream lost none after
# ``after`` if it still holds an entry at or before it, or if no trim reached past
# it (none reaches past head - history). Otherwise (an anchor in 'log''s extra
# node, or behind a revision that jumped past another writer's entry) the
# anchor is nil: the watcher's history is gone, where it silently skipped the
# topic's entries that its stream had dropped.
LOG_READ_LUA = (
    _LUA_PRELUDE
    + r"""
local after = tonumber(ARGV[2])
local hr, ht, last = head()
local anchor = false
if after > 0 and last and hr == after then
  -- A watcher at the head 'last' names: its token is the one the same commit wrote in 'log' (the
  -- entry, its change record with it, is not copied for it), and 'log' holds nothing past it.
  anchor = ht
elseif after > 0 then
  local e = redis.call('XRANGE', P .. 'log', after .. '-0', after .. '-0')[1]
  if e then
    local f = e[2]
    for i = 1, #f, 2 do
      if f[i] == 't' then anchor = f[i + 1] end
    end
  elseif hr >= after then
    -- A revision 'log' does not hold: the head of a 'log' that was empty (trimmed, or deleted by
    -- another writer; the head is then the counter's, with no token), or one trimmed away. Nothing
    -- after it is lost, and its anchor is '' (the token such a head has), if 'log' is still empty
    -- and the head is still that revision, or if 'log' starts at the next revision (a trim takes
    -- the oldest entries first; a 'log' deleted and made again starts past it) and no entry past
    -- it was deleted (XDEL; XINFO's max-deleted-entry-id, which a trim does not move).
    local first = redis.call('XRANGE', P .. 'log', '-', '+', 'COUNT', 1)[1]
    if not first then
      if hr == after then anchor = '' end
    elseif first[1] == (after + 1) .. '-0' then
      local info = redis.call('XINFO', 'STREAM', P .. 'log')
      for i = 1, #info, 2 do
        if info[i] == 'max-deleted-entry-id' and tonumber(info[i + 1]:match('^(%d+)')) <= after then
          anchor = ''
        end
      end
    end
  end
else
  local e = redis.call('XRANGE', P .. 'log', '-', '+', 'COUNT', 1)[1]
  if (not e and hr == 0) or (e and e[1] == '1-0') then anchor = '' end
  -- A first commit that did not land at 1 (past another writer's entry, or failed): b is its
  -- revision (or the next one's). 'log' then holds every change if it still starts at or before
  -- b (a 'log' deleted and made again starts past it) and every entry it lost was undone by
  -- its commit (m; a trim, a compaction or another writer's XDEL makes more).
  -- A 'log0' of another type (another writer's; a commit leaves it as it is) vouches for nothing.
  local b = not anchor and tonumber(redis.pcall('HGET', P .. 'log0', 'b'))
  if b and not e and hr < b then anchor = '' end
  if b and e and tonumber(e[1]:match('^(%d+)')) <= b then
    local info = redis.call('XINFO', 'STREAM', P .. 'log')
    local n, added = 0, 0
    for i = 1, #info, 2 do
      if info[i] == 'length' then n = info[i + 1] elseif info[i] == 'entries-added' then added = info[i + 1] end
    end
    if added - n == (tonumber(redis.call('HGET', P .. 'log0', 'm')) or 0) then anchor = '' end
  end
end
local args, n = {'COUNT', ARGV[3], 'STREAMS'}, #ARGV - 4
for j = 1, n do
  args[3 + j] = ARGV[4 + j]
  args[3 + n + j] = after .. '-0'
end
local entries = redis.call('XREAD', unpack(args))
if anchor and after + 1 < hr - tonumber(ARGV[4]) then
  for _, e in ipairs(entries or {}) do
    if e[1] ~= P .. 'log' and #e[2] > 0
      and #redis.call('XREVRANGE', e[1], after .. '-0', '-', 'COUNT', 1) == 0 then
      anchor = false
    end
  end
end
return {hr, ht, anchor, entries}
"""
)
