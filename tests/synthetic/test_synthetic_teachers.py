"""Teacher backends against the scripted server: retries, failures, cache, images; and the judge's checks."""

from __future__ import annotations

import base64
import io
import json
import threading
from pathlib import Path

import pytest
from chat_server import ChatServer
from PIL import Image
from synth_helpers import judge_pairs, scripted_reply

from synthetic.evolution.judge import Judge, parse_verdicts
from synthetic.teachers import ResponseCache
from synthetic.teachers.base import TeacherError
from synthetic.teachers.openai_compat import OpenAICompatTeacher

HELLO = [{"role": "user", "content": "hello"}]


def _teacher(server: ChatServer, **kw) -> OpenAICompatTeacher:
    return OpenAICompatTeacher("m", base_url=server.url, backoff=0.01, **kw)


def test_retries_on_429_and_500_then_succeeds() -> None:
    script = iter([(429, "slow down"), (500, "boom"), "fine"])
    with ChatServer(lambda body: next(script)) as server:
        teacher = _teacher(server)
        assert teacher.generate([HELLO]) == ["fine"]
    assert len(server.requests) == 3
    assert teacher.usage.retries == 2 and teacher.usage.requests == 1 and teacher.usage.completion_tokens == 1


def test_gives_up_after_max_retries_and_never_retries_a_400() -> None:
    with ChatServer(lambda body: (503, "down")) as server:
        with pytest.raises(TeacherError, match="after 3 attempt"):
            _teacher(server, max_retries=2).generate([HELLO])
        assert len(server.requests) == 3
    with ChatServer(lambda body: (400, "bad request")) as server:
        with pytest.raises(TeacherError, match="after 1 attempt"):
            _teacher(server).generate([HELLO])
        assert len(server.requests) == 1


def test_one_failed_request_keeps_the_others_cached(tmp_path: Path) -> None:
    def reply(body):
        text = body["messages"][-1]["content"]
        return (400, "rejected") if text == "bad" else text.upper()

    convs = [[{"role": "user", "content": t}] for t in ("a", "bad", "c")]
    with ChatServer(reply) as server:
        teacher = _teacher(server, cache=str(tmp_path))
        with pytest.raises(TeacherError, match="1 of 3 requests failed"):
            teacher.generate(convs)
        server.requests.clear()
        assert teacher.generate([convs[0], convs[2]]) == ["A", "C"]
        assert server.requests == []  # both came from the cache


def test_concurrency_limit_is_respected() -> None:
    """9 requests at max_concurrency=3: every request waits at a 3-party barrier, so the peak is exactly 3
    however slowly threads are scheduled (sleeping 50 ms and hoping they overlap failed under load).
    More than 3 in flight would show as a peak above 3; fewer would never trip the barrier (the timeout
    only ends that failing case)."""
    active, peak, lock = [0], [0], threading.Lock()
    together = threading.Barrier(3, timeout=120)

    def reply(body):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        together.wait()
        with lock:
            active[0] -= 1
        return "ok"

    with ChatServer(reply) as server:
        out = _teacher(server, max_concurrency=3).generate(
            [[{"role": "user", "content": str(i)}] for i in range(9)]
        )
    assert out == ["ok"] * 9 and peak[0] == 3


def test_cache_key_covers_sampling_and_images(tmp_path: Path) -> None:
    png = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(png, format="PNG")
    with ChatServer(lambda body: "x") as server:
        teacher = _teacher(server, cache=ResponseCache(tmp_path))
        teacher.generate([HELLO], temperature=0.0)
        teacher.generate([HELLO], temperature=0.0)
        teacher.generate([HELLO], temperature=1.0)
        teacher.generate([HELLO], [[png.getvalue()]])
        teacher.generate([HELLO], [[png.getvalue()]])
    assert len(server.requests) == 3 and teacher.usage.cache_hits == 2
    # Images travel as base64 data URLs in the last user turn, in the real wire format.
    part = server.requests[-1]["messages"][-1]["content"][0]
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/png;base64,")
    assert base64.b64decode(part["image_url"]["url"].split(",", 1)[1]) == png.getvalue()
    assert server.requests[1]["temperature"] == 1.0


def test_environment_supplies_endpoint_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with ChatServer(lambda body: "env ok") as server:
        monkeypatch.setenv("MY_URL", server.url)
        assert OpenAICompatTeacher("m", base_url_env="MY_URL").generate([HELLO]) == ["env ok"]
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAICompatTeacher("m")  # neither a key nor a local endpoint: refuse rather than call the public API


def test_bad_conversations_are_rejected_with_their_index() -> None:
    with ChatServer(lambda body: "x") as server:
        teacher = _teacher(server)
        with pytest.raises(ValueError, match="conversation 1, message 0"):
            teacher.generate([HELLO, [{"role": "robot", "content": "hi"}]])
        with pytest.raises(ValueError, match="last message must be from 'user'"):
            teacher.generate([[{"role": "assistant", "content": "hi"}]])
    assert server.requests == []


def _pairs(n: int) -> list[dict]:
    item = {"objects": [], "skills": [], "format": "", "steps": [], "answer": "a"}
    return [
        {"id": f"x{i}", "caption": "c", "previous": {**item, "question": f"q{i}"},
         "rewrite": {**item, "question": f"q{i} +" if i % 2 else f"q{i} dull"}}
        for i in range(n)
    ]  # fmt: skip


def test_judge_count_mismatch_falls_back_to_single_pairs() -> None:
    def short_by_one(body):
        reply = json.loads(scripted_reply(body))
        return json.dumps(reply[:-1] if len(reply) > 1 else reply)

    with ChatServer(short_by_one) as server:
        judge = Judge(_teacher(server), group_size=3)
        verdicts = judge.judge(_pairs(5))
    sizes = [len(judge_pairs(b)) for b in server.requests]
    # the two groups go out concurrently (either may arrive first), then every pair alone
    assert sorted(sizes[:2]) == [2, 3] and sizes[2:] == [1] * 5
    assert [verdicts[f"x{i}"].improved for i in range(5)] == [False, True, False, True, False]
    assert all(v.regrouped_after.startswith("count mismatch") for v in verdicts.values())
    assert judge.problems["count mismatch"] == 2


def test_judge_reorders_by_id_and_marks_hopeless_pairs_as_errors() -> None:
    def shuffled_or_junk(body):
        pairs = judge_pairs(body)
        if len(pairs) == 1:
            return "no idea"
        return json.dumps(list(reversed(json.loads(scripted_reply(body)))))

    with ChatServer(shuffled_or_junk) as server:
        verdicts = Judge(_teacher(server), group_size=4).judge(_pairs(5))
    assert [verdicts[f"x{i}"].improved for i in range(4)] == [
        False,
        True,
        False,
        True,
    ]  # reversed, then reordered
    assert (
        verdicts["x4"].status == "error"
        and not verdicts["x4"].improved
        and "unparseable" in verdicts["x4"].error
    )


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ('[{"id": "1", "improved": true, "score": 7}]', "count mismatch"),
        (
            '[{"id": "1", "improved": true, "score": 7}, {"id": "3", "improved": true, "score": 7}]',
            "id mismatch",
        ),
        ('[{"improved": "maybe", "score": 7}, {"improved": true, "score": 7}]', "'improved' must be yes/no"),
        ('[{"improved": true, "score": 11}, {"improved": true, "score": 7}]', "from 1 to 10"),
    ],
)
def test_parse_verdicts_rejects_malformed_replies(reply: str, problem: str) -> None:
    verdicts, why = parse_verdicts(reply, ["1", "2"])
    assert verdicts is None and problem in why


def test_network_guard_refuses_non_loopback_hosts() -> None:
    import socket

    with socket.socket() as s, pytest.raises(AssertionError, match="only loopback"):
        s.connect(("192.0.2.1", 443))  # TEST-NET-1: would leave the machine
