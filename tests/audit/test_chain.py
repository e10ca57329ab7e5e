"""The chain's rules without a store: how a record is made, and what the walk says of each kind of tampering."""

import json

from services.audit.chain import GENESIS, Tail, record, record_hash, tail_of, walk
from tests.audit.harness import entry


def chain_of(n: int) -> list[dict]:
    records, tail = [], Tail()
    for offset in range(n):
        e = entry("t.x", 0, offset * 2)  # offsets need not be contiguous
        document = record(tail, topic=e.topic, partition=e.partition, offset=e.offset, recorded_at=e.recorded_at, event=e.event)
        records.append(document)
        tail = tail_of(document)
    return records


def test_a_record_links_to_the_one_before_and_its_hash_is_its_body_s():
    first, second = chain_of(2)

    assert (first["seq"], first["prev_hash"], second["seq"], second["prev_hash"]) == (1, GENESIS, 2, first["hash"])
    assert second["hash"] == record_hash(first["hash"], second["body"])
    assert json.loads(second["body"])["offset"] == second["offset"] == 2


def test_an_untouched_chain_walks_to_its_end_with_no_finding():
    assert walk("t.x/0", chain_of(5)) == (5, None)


def test_a_changed_body_is_found_modified():
    records = chain_of(5)
    body = json.loads(records[2]["body"])
    body["event"]["payload"]["outcome"] = "BLOCK"
    records[2] = {**records[2], "body": json.dumps(body)}

    _, finding = walk("t.x/0", records)
    assert finding is not None and (finding.what, finding.seq) == ("modified", 3)


def test_a_summary_that_disagrees_with_the_body_is_found_modified():
    records = chain_of(5)
    records[1] = {**records[1], "subject": "someone-else"}

    _, finding = walk("t.x/0", records)
    assert finding is not None and (finding.what, finding.seq) == ("modified", 2)


def test_a_missing_record_is_found_deleted():
    records = chain_of(5)
    del records[2]

    _, finding = walk("t.x/0", records)
    assert finding is not None and (finding.what, finding.seq) == ("deleted", 4)


def test_a_missing_first_record_is_found_deleted():
    _, finding = walk("t.x/0", chain_of(3)[1:])
    assert finding is not None and (finding.what, finding.seq) == ("deleted", 2)


def test_two_neighbours_swapped_are_found_reordered():
    records = chain_of(5)
    records[1], records[2] = records[2], records[1]

    _, finding = walk("t.x/0", records)
    assert finding is not None and (finding.what, finding.seq) == ("reordered", 3)


def test_a_record_slipped_in_with_a_correct_link_and_hash_is_found_inserted():
    records = chain_of(4)
    e = entry("t.x", 0, 3)
    forged = record(tail_of(records[1]), topic=e.topic, partition=e.partition, offset=e.offset, recorded_at=e.recorded_at, event=e.event)
    records.insert(2, forged)

    _, finding = walk("t.x/0", records)
    assert finding is not None and (finding.what, finding.record_id) == ("inserted", forged["_id"])
