"""The data node: storage, the replication protocol and the MessageBoard service."""
