//! Routing rows to topics and partitions (placeholder until the router lands).
