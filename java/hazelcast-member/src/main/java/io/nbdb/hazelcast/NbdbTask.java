package io.nbdb.hazelcast;

import com.hazelcast.nio.serialization.IdentifiedDataSerializable;

/** A task nbdb clients send: serialized with {@link NbdbFactory}. */
abstract class NbdbTask implements IdentifiedDataSerializable {
    @Override
    public final int getFactoryId() {
        return NbdbFactory.FACTORY_ID;
    }
}
