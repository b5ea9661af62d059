package io.nbdb.hazelcast;

import com.hazelcast.core.HazelcastInstance;
import com.hazelcast.core.HazelcastInstanceAware;
import com.hazelcast.map.IMap;
import com.hazelcast.nio.ObjectDataInput;
import com.hazelcast.nio.ObjectDataOutput;
import com.hazelcast.query.Predicates;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * One nbdb commit (or a group of them at one revision), run in a member's JVM: the same protocol and
 * the same stored bytes as nbdb.backends.hazelcast._backend's client-side commit, in one client round trip.
 *
 * <p>Under the namespace's commit lock (and the lock of every lease a condition names, taken first, in
 * name order, as the client does): read {@code head} and the keys, check each commit's conditions,
 * decide with {@code putIfAbsent} of the log entry at {@code head + 1}, move each key from the bytes
 * read to the new ones (compare-and-set), then move {@code head}. The reply is {@code long[]}:
 * {@code {APPLIED, revision, ok_1, ..., ok_n}} (1: that commit is in at {@code revision}; no ok at all:
 * nothing was written), {@code {FALLBACK}} (nothing written: something needs the client's own protocol,
 * such as a decided commit left unapplied or data nbdb did not write) or {@code {BUSY}} (nothing written:
 * the lock was not granted in time). An exception once the entry was sent leaves the outcome to the
 * client's commit-token path.
 */
public final class CommitTask extends NbdbTask implements Callable<long[]>, HazelcastInstanceAware {
    /**
     * 3 since protocol 3 (1 before): a member of an older jar refuses a task of this protocol unread, so a client
     * never counts on checks the member does not make; a client of an older protocol probes this member first.
     */
    static final int CLASS_ID = 3;
    /**
     * Bumped when the task's wire form, reply or what the client may count on changes; the client checks it with
     * {@link ProbeTask} (2: WRITTEN_AT, VALUE_IS; 3: a task whose anchor {@code head} holds replies "in at head").
     */
    static final long PROTOCOL = 3;
    static final long APPLIED = 0;
    static final long FALLBACK = 1;
    static final long BUSY = 2;
    static final AtomicLong RUN = new AtomicLong();

    private static final Logger LOG = Logger.getLogger(CommitTask.class.getName());
    private static final String HEAD = "head";
    private static final String COMMIT_LOCK = "commit";
    private static final int KV_HEADER = 16;
    private static final byte VERSION_IS = 1;
    private static final byte EXISTS = 2;
    private static final byte LEASE_HELD = 3;
    private static final byte PREFIX_UNCHANGED = 4;
    private static final byte WRITTEN_AT = 5;
    /** A released unique claim's condition: the key holds the condition's token bytes. */
    private static final byte VALUE_IS = 6;

    private transient HazelcastInstance hz;
    private String kvName;
    private String logName;
    private String metaName;
    private String leaseName;
    private String objectPrefix;
    private String anchor;
    private long lockLeaseMs;
    private long lockWaitMs;
    private List<Commit> commits = new ArrayList<>();

    private static final class Condition {
        byte kind;
        String key;
        long number;
        byte[] token;
    }

    private static final class Commit {
        final List<Condition> conditions = new ArrayList<>();
        String[] putKeys;
        byte[][] putValues;
        long[] putTtlMs;
        String[] deletes;
    }

    /** One stored key a commit changes: its bytes before and after (null: absent), a TTL in ms (0: none). */
    private record Redo(String key, byte[] old, byte[] now, long ttlMs) {}

    /** Data nbdb did not write: the client's own protocol reports it as the family expects. */
    private static final class Unreadable extends Exception {
        Unreadable() {
            super(null, null, false, false);
        }
    }

    @Override
    public void setHazelcastInstance(HazelcastInstance instance) {
        this.hz = instance;
    }

    @Override
    public long[] call() {
        IMap<Object, Object> meta = hz.getMap(metaName);
        IMap<Object, Object> lease = hz.getMap(leaseName);
        Set<String> leases = new TreeSet<>();
        for (Commit commit : commits) {
            for (Condition c : commit.conditions) {
                if (c.kind == LEASE_HELD) {
                    leases.add(c.key);
                }
            }
        }
        List<String> held = new ArrayList<>();
        try {
            for (String name : leases) {
                if (!tryLock(lease, name)) {
                    return new long[] {BUSY};
                }
                held.add(name);
            }
            if (!tryLock(meta, COMMIT_LOCK)) {
                return new long[] {BUSY};
            }
            try {
                RUN.incrementAndGet();
                return locked(meta);
            } finally {
                unlock(meta, COMMIT_LOCK);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return new long[] {BUSY};
        } finally {
            for (String name : held) {
                unlock(lease, name);
            }
        }
    }

    private boolean tryLock(IMap<Object, Object> map, String key) throws InterruptedException {
        return map.tryLock(key, lockWaitMs, TimeUnit.MILLISECONDS, lockLeaseMs, TimeUnit.MILLISECONDS);
    }

    private static void unlock(IMap<Object, Object> map, String key) {
        try {
            map.unlock(key);
        } catch (RuntimeException e) {
            // The lease ran out: nothing left to release.
            LOG.log(Level.WARNING, "nbdb: releasing the lock of " + key + " failed", e);
        }
    }

    private long[] locked(IMap<Object, Object> meta) {
        IMap<Object, Object> kv = hz.getMap(kvName);
        IMap<Object, Object> log = hz.getMap(logName);
        Object headRaw;
        long revision;
        Object logKey;
        List<Redo> redo = new ArrayList<>();
        ByteArrayOutputStream objects = new ByteArrayOutputStream();
        long[] reply = new long[2 + commits.size()];
        boolean any = false;
        byte[] token = anchor.getBytes(StandardCharsets.US_ASCII);
        try {
            headRaw = meta.get(HEAD);
            if (headRaw == null) {
                revision = 1;
            } else if (headRaw instanceof byte[] b && b.length >= 8) {
                revision = ByteBuffer.wrap(b).getLong() + 1;
                if (Arrays.equals(b, 8, b.length, token, 0, token.length)) {
                    // An earlier run of this very task is in at head: the client library runs a task answered with
                    // a retryable error again by itself, and a commit whose conditions still hold after its own
                    // write (a blind write) was applied twice. A lone commit is in (its entry is written only if
                    // it held); a group's commits are told by their tokens (ok = 0), as after any failed run.
                    long[] in = new long[2 + commits.size()];
                    in[0] = APPLIED;
                    in[1] = revision - 1;
                    if (commits.size() == 1) {
                        in[2] = 1;
                    }
                    return in;
                }
            } else {
                return new long[] {FALLBACK};
            }
            // The client writes revisions as Python ints: a 32-bit Integer while they fit.
            logKey = revision <= Integer.MAX_VALUE ? (Object) Integer.valueOf((int) revision) : (Object) revision;
            Map<Object, Object> current = readKeys(kv);
            boolean failed = false;
            for (int i = 0; i < commits.size(); i++) {
                Commit commit = commits.get(i);
                if (holds(commit, current, kv, hz.getMap(leaseName))) {
                    plan(commit, current, revision, redo, objects);
                    reply[2 + i] = 1;
                    any = true;
                } else {
                    failed = true;
                }
            }
            // A failed condition stands, unless a decided commit is still unapplied: the client applies it.
            if (failed && log.containsKey(logKey)) {
                return new long[] {FALLBACK};
            }
        } catch (Unreadable e) {
            return new long[] {FALLBACK};
        } catch (RuntimeException e) {
            LOG.log(Level.WARNING, "nbdb: a commit failed before its decision; the client commits on its own", e);
            return new long[] {FALLBACK};
        }
        reply[0] = APPLIED;
        reply[1] = revision;
        if (!any) {
            return reply;
        }
        byte[] entry = entry(objects.toByteArray(), redo);
        // The decision. From here on, an exception leaves the outcome to the client's commit-token path.
        if (log.putIfAbsent(logKey, entry) != null) {
            return new long[] {FALLBACK}; // another commit took the revision (a client whose lock lapsed)
        }
        for (Redo r : redo) {
            if (r.now != null && r.old == null) {
                if (r.ttlMs > 0) {
                    kv.putIfAbsent(r.key, r.now, r.ttlMs, TimeUnit.MILLISECONDS);
                } else {
                    kv.putIfAbsent(r.key, r.now);
                }
            } else if (r.now != null) {
                kv.replace(r.key, r.old, r.now);
            } else if (r.old != null) {
                kv.remove(r.key, r.old);
            }
        }
        byte[] head = ByteBuffer.allocate(8 + token.length).putLong(revision).put(token).array();
        if (headRaw == null) {
            meta.putIfAbsent(HEAD, head);
        } else {
            meta.replace(HEAD, headRaw, head);
        }
        return reply;
    }

    private Map<Object, Object> readKeys(IMap<Object, Object> kv) {
        Set<Object> keys = new LinkedHashSet<>();
        for (Commit commit : commits) {
            keys.addAll(Arrays.asList(commit.putKeys));
            keys.addAll(Arrays.asList(commit.deletes));
            for (Condition c : commit.conditions) {
                if (c.kind == VERSION_IS || c.kind == EXISTS || c.kind == WRITTEN_AT || c.kind == VALUE_IS) {
                    keys.add(c.key);
                }
            }
        }
        return keys.isEmpty() ? new HashMap<>() : kv.getAll(keys);
    }

    private static boolean holds(
            Commit commit, Map<Object, Object> current, IMap<Object, Object> kv, IMap<Object, Object> lease)
            throws Unreadable {
        for (Condition c : commit.conditions) {
            switch (c.kind) {
                case VERSION_IS: {
                    byte[] found = stored(current.get(c.key));
                    if ((found == null ? 0 : version(found)) != c.number) {
                        return false;
                    }
                    break;
                }
                case EXISTS:
                    if (current.get(c.key) == null) {
                        return false;
                    }
                    break;
                case WRITTEN_AT: {
                    // Present, last written at that revision: a key deleted and created again since has a later one.
                    byte[] found = stored(current.get(c.key));
                    if (found == null || ByteBuffer.wrap(found).getLong(8) != c.number) {
                        return false;
                    }
                    break;
                }
                case VALUE_IS: {
                    byte[] found = stored(current.get(c.key));
                    if (found == null || !Arrays.equals(found, KV_HEADER, found.length, c.token, 0, c.token.length)) {
                        return false;
                    }
                    break;
                }
                case LEASE_HELD: {
                    Object holder = lease.get(c.key);
                    if (!(holder instanceof byte[] b) || !Arrays.equals(b, c.token)) {
                        return false;
                    }
                    break;
                }
                case PREFIX_UNCHANGED: {
                    Collection<Object> inside = kv.values(Predicates.between("__key", c.key, c.key + "\uffff"));
                    for (Object raw : inside) {
                        byte[] found = stored(raw);
                        if (found != null && ByteBuffer.wrap(found).getLong(8) > c.number) {
                            return false;
                        }
                    }
                    break;
                }
                default:
                    throw new IllegalArgumentException("unknown condition kind " + c.kind);
            }
        }
        return true;
    }

    /** The stored bytes of a key, or null if absent; Unreadable for data nbdb did not write. */
    private static byte[] stored(Object raw) throws Unreadable {
        if (raw == null) {
            return null;
        }
        if (!(raw instanceof byte[] b) || b.length < KV_HEADER) {
            throw new Unreadable();
        }
        return b;
    }

    private static long version(byte[] stored) {
        return ByteBuffer.wrap(stored).getLong(0);
    }

    private void plan(
            Commit commit, Map<Object, Object> current, long revision, List<Redo> redo, ByteArrayOutputStream objects)
            throws Unreadable {
        for (int i = 0; i < commit.putKeys.length; i++) {
            String key = commit.putKeys[i];
            byte[] previous = stored(current.get(key));
            long oldVersion = previous == null ? 0 : version(previous);
            byte[] value = commit.putValues[i];
            byte[] now = ByteBuffer.allocate(KV_HEADER + value.length)
                    .putLong(oldVersion + 1).putLong(revision).put(value).array();
            redo.add(new Redo(key, previous, now, commit.putTtlMs[i]));
            if (key.startsWith(objectPrefix)) {
                frame(objects, key, value, oldVersion + 1, previous == null ? null : valueOf(previous), oldVersion);
            }
        }
        for (String key : commit.deletes) {
            byte[] previous = stored(current.get(key));
            if (previous != null) {
                redo.add(new Redo(key, previous, null, 0));
                if (key.startsWith(objectPrefix)) {
                    frame(objects, key, null, 0, valueOf(previous), version(previous));
                }
            }
        }
    }

    private static byte[] valueOf(byte[] stored) {
        return Arrays.copyOfRange(stored, KV_HEADER, stored.length);
    }

    /** The change-log entry: token, length of the object changes, the object changes, the redo records. */
    private byte[] entry(byte[] objects, List<Redo> redo) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.writeBytes(anchor.getBytes(StandardCharsets.US_ASCII));
        out.writeBytes(ByteBuffer.allocate(4).putInt(objects.length).array());
        out.writeBytes(objects);
        for (Redo r : redo) {
            // The redo records reuse the changes' framing: value = old bytes, prev_value = new bytes, version = TTL.
            frame(out, r.key, r.old, r.ttlMs, r.now, 0);
        }
        return out.toByteArray();
    }

    /** One change in nbdb.families.pubsub.encode_changes' framing: 5 length-prefixed fields (-1: None). */
    private static void frame(
            ByteArrayOutputStream out, String key, byte[] value, long version, byte[] prevValue, long prevVersion) {
        field(out, key.getBytes(StandardCharsets.UTF_8));
        field(out, value);
        field(out, Long.toString(version).getBytes(StandardCharsets.US_ASCII));
        field(out, prevValue);
        field(out, Long.toString(prevVersion).getBytes(StandardCharsets.US_ASCII));
    }

    private static void field(ByteArrayOutputStream out, byte[] item) {
        if (item == null) {
            out.writeBytes(ByteBuffer.allocate(4).putInt(-1).array());
        } else {
            out.writeBytes(ByteBuffer.allocate(4).putInt(item.length).array());
            out.writeBytes(item);
        }
    }

    @Override
    public int getClassId() {
        return CLASS_ID;
    }

    @Override
    public void writeData(ObjectDataOutput out) throws IOException {
        out.writeString(kvName);
        out.writeString(logName);
        out.writeString(metaName);
        out.writeString(leaseName);
        out.writeString(objectPrefix);
        out.writeString(anchor);
        out.writeLong(lockLeaseMs);
        out.writeLong(lockWaitMs);
        out.writeInt(commits.size());
        for (Commit commit : commits) {
            out.writeInt(commit.conditions.size());
            for (Condition c : commit.conditions) {
                out.writeByte(c.kind);
                out.writeString(c.key);
                out.writeLong(c.number);
                out.writeByteArray(c.token);
            }
            out.writeStringArray(commit.putKeys);
            for (byte[] value : commit.putValues) {
                out.writeByteArray(value);
            }
            out.writeLongArray(commit.putTtlMs);
            out.writeStringArray(commit.deletes);
        }
    }

    @Override
    public void readData(ObjectDataInput in) throws IOException {
        kvName = in.readString();
        logName = in.readString();
        metaName = in.readString();
        leaseName = in.readString();
        objectPrefix = in.readString();
        anchor = in.readString();
        lockLeaseMs = in.readLong();
        lockWaitMs = in.readLong();
        int n = in.readInt();
        commits = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            Commit commit = new Commit();
            int conditions = in.readInt();
            for (int j = 0; j < conditions; j++) {
                Condition c = new Condition();
                c.kind = in.readByte();
                c.key = in.readString();
                c.number = in.readLong();
                c.token = in.readByteArray();
                commit.conditions.add(c);
            }
            commit.putKeys = in.readStringArray();
            int puts = commit.putKeys.length;
            commit.putValues = new byte[puts][];
            for (int j = 0; j < puts; j++) {
                commit.putValues[j] = in.readByteArray();
            }
            commit.putTtlMs = in.readLongArray();
            commit.deletes = in.readStringArray();
            commits.add(commit);
        }
    }
}
