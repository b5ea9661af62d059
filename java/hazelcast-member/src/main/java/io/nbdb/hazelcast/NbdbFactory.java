package io.nbdb.hazelcast;

import com.hazelcast.nio.serialization.DataSerializableFactory;
import com.hazelcast.nio.serialization.IdentifiedDataSerializable;

/**
 * The classes nbdb clients send to the members. Register it in the member config:
 * {@code serialization.data-serializable-factories: [{factory-id: 7301, class-name: io.nbdb.hazelcast.NbdbFactory}]}.
 */
public final class NbdbFactory implements DataSerializableFactory {
    /** The factory id the Python client writes (nbdb.backends.hazelcast._member.FACTORY_ID). */
    public static final int FACTORY_ID = 7301;

    @Override
    public IdentifiedDataSerializable create(int classId) {
        switch (classId) {
            case CommitTask.CLASS_ID:
                return new CommitTask();
            case ProbeTask.CLASS_ID:
                return new ProbeTask();
            default:
                return null;
        }
    }
}
