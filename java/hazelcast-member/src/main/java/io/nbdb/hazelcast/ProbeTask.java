package io.nbdb.hazelcast;

import com.hazelcast.nio.ObjectDataInput;
import com.hazelcast.nio.ObjectDataOutput;
import java.util.concurrent.Callable;

/** Answers {protocol, commit tasks this member ran}: a client sends it to learn whether the members have nbdb's code. */
public final class ProbeTask extends NbdbTask implements Callable<long[]> {
    static final int CLASS_ID = 2;

    @Override
    public long[] call() {
        return new long[] {CommitTask.PROTOCOL, CommitTask.RUN.get()};
    }

    @Override
    public int getClassId() {
        return CLASS_ID;
    }

    @Override
    public void writeData(ObjectDataOutput out) {}

    @Override
    public void readData(ObjectDataInput in) {}
}
