"""Looking inside the topics: partitions, end offsets, consumer groups' lag, and the records.

What ``pinpipe topics`` and ``pinpipe tail`` show, on the embedded Tansu broker and on any
Kafka. Debian's kcat (librdkafka 2.0.2) cannot talk to the embedded broker at all, so these
are the way to see what a topic holds and why a record went to the dead letters.

Three things the embedded broker needs, all right on Apache Kafka too:

- **End offsets are found by fetching.** Tansu answers ListOffsets(LATEST) with a stale offset
  (ARCHITECTURE.md), so an end is the end-of-partition event of a consumer assigned at that
  stale offset, or the high watermark of the fetch response that brought a record. On Kafka
  the event comes at once. A consumer told to start at the end would start at the stale
  offset on Tansu and show old records: :class:`Tail` starts at the probed ends instead.
- **Topics are never named in a metadata request.** Tansu creates a topic when its metadata
  is asked for (measured: ``list_topics(topic="nope")`` made ``nope`` with 4 partitions), so
  topics are looked up in the list of all topics, and an unknown one is an error, not a topic.
- **No consumer group is joined or committed.** The consumers here are assign-only with
  ``enable.auto.commit`` off; librdkafka wants a ``group.id`` all the same, so they carry
  :data:`INSPECT_GROUP`, which never appears in the broker's list of groups.

Tansu 0.6.0 lists only the consumer groups that have committed offsets (a group that joined
but never committed is not listed) and reports each as ``unknown`` in that list; its
DescribeGroups answers the state (``stable``, ``empty``). What a broker cannot answer becomes a
note of :class:`Overview`, not an error.
"""

from pinpipe.services.inspect.offsets import (
    INSPECT_GROUP,
    InspectError,
    UnknownTopicError,
    first_record_times,
    list_partitions,
    partition_ends,
    partition_starts,
)
from pinpipe.services.inspect.overview import (
    GroupPartitionLag,
    GroupSummary,
    Overview,
    PartitionOffsets,
    TopicSummary,
    overview,
)
from pinpipe.services.inspect.tail import Tail, TailRecord

__all__ = [
    "INSPECT_GROUP",
    "GroupPartitionLag",
    "GroupSummary",
    "InspectError",
    "Overview",
    "PartitionOffsets",
    "Tail",
    "TailRecord",
    "TopicSummary",
    "UnknownTopicError",
    "first_record_times",
    "list_partitions",
    "overview",
    "partition_ends",
    "partition_starts",
]
