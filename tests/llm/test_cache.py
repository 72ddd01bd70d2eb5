import subprocess
import sys
import textwrap
import threading

import pytest

from hf_barred.llm.base import Completion, SamplingParams
from hf_barred.llm.cache import CachedBackend, ResponseCache
from tests.utils import REPO_ROOT
from tests.utils.scripted_backend import ScriptedBackend


def conv(text):
    return [{"role": "user", "content": text}]


def test_key_depends_on_everything_that_changes_the_answer():
    base = ResponseCache.key("m", conv("a"), SamplingParams(seed=1))
    assert base == ResponseCache.key("m", conv("a"), SamplingParams(seed=1))
    assert base != ResponseCache.key("m2", conv("a"), SamplingParams(seed=1))
    assert base != ResponseCache.key("m", conv("b"), SamplingParams(seed=1))
    assert base != ResponseCache.key("m", conv("a"), SamplingParams(seed=2))
    assert base != ResponseCache.key("m", conv("a"), SamplingParams(seed=1, json_schema={"type": "object"}))


def test_hits_cost_no_call_and_keep_order(tmp_path):
    backend = ScriptedBackend(lambda c: c[-1]["content"].upper())
    engine = CachedBackend(backend, ResponseCache(tmp_path / "r.sqlite"))
    first = engine.chat([conv("a"), conv("b")], SamplingParams())
    assert [c.text for c in first] == ["A", "B"] and not any(c.cached for c in first)
    second = engine.chat([conv("c"), conv("a"), conv("b")], SamplingParams())
    assert [c.text for c in second] == ["C", "A", "B"]
    assert [c.cached for c in second] == [False, True, True]
    assert len(backend.sent) == 3
    assert engine.usage.calls == 3 and engine.usage.cache_hits == 2


def test_duplicate_prompts_in_one_batch_make_one_call(tmp_path):
    backend = ScriptedBackend(lambda c: "x")
    engine = CachedBackend(backend, ResponseCache(tmp_path / "r.sqlite"))
    out = engine.chat([conv("a"), conv("a"), conv("a")], SamplingParams())
    assert len(backend.sent) == 1 and [c.text for c in out] == ["x"] * 3


def test_errors_are_not_cached(tmp_path):
    class Failing(ScriptedBackend):
        def chat(self, conversations, params, on_result=None):
            self.sent.extend(conversations)
            return [Completion(text="", finish_reason="error", error="boom") for _ in conversations]

    backend = Failing(lambda c: "")
    engine = CachedBackend(backend, ResponseCache(tmp_path / "r.sqlite"))
    assert (
        engine.chat([conv("a")], SamplingParams())[0].error == "request failed: boom"
    )  # marked as a failed request, not a parse failure
    engine.chat([conv("a")], SamplingParams())
    assert len(backend.sent) == 2 and engine.usage.errors == 2


def test_interrupted_batch_keeps_finished_answers(tmp_path):
    cache = ResponseCache(tmp_path / "r.sqlite")
    backend = ScriptedBackend(lambda c: "done", fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        CachedBackend(backend, cache).chat([conv(str(i)) for i in range(5)], SamplingParams())
    assert len(cache) == 2
    resumed = ScriptedBackend(lambda c: "done")
    CachedBackend(resumed, cache).chat([conv(str(i)) for i in range(5)], SamplingParams())
    assert len(resumed.sent) == 3


def test_concurrent_threads_share_one_file(tmp_path):
    cache = ResponseCache(tmp_path / "r.sqlite")
    engine = CachedBackend(ScriptedBackend(lambda c: c[-1]["content"]), cache)

    def work(offset):
        engine.chat([conv(f"{offset}-{i}") for i in range(50)], SamplingParams())

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(cache) == 200
    assert cache.stats()["misses"] == 200


SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from hf_barred.llm.base import SamplingParams
    from hf_barred.llm.cache import CachedBackend, ResponseCache
    from tests.utils.scripted_backend import ScriptedBackend
    backend = ScriptedBackend(lambda c: "answer " + c[-1]["content"])
    engine = CachedBackend(backend, ResponseCache({path!r}))
    out = engine.chat([[{{"role": "user", "content": str(i)}}] for i in range(20)], SamplingParams())
    assert [c.text for c in out] == ["answer " + str(i) for i in range(20)]
    print(len(backend.sent))
    """
)


def test_cache_is_shared_across_processes(tmp_path):

    path = str(tmp_path / "r.sqlite")
    script = SCRIPT.format(tests=str(REPO_ROOT), path=path)
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    second = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert first.stdout.strip() == "20"
    assert second.stdout.strip() == "0"
    stats = ResponseCache(path).stats()
    assert (stats["hits"], stats["misses"]) == (20, 20)


def _child_writes(path):
    cache = _FORK_CACHE
    CachedBackend(ScriptedBackend(lambda c: "child"), cache).chat(
        [conv(f"child-{i}") for i in range(10)], SamplingParams()
    )


_FORK_CACHE = None


def test_forked_workers_open_their_own_connection(tmp_path):
    import multiprocessing

    global _FORK_CACHE
    _FORK_CACHE = ResponseCache(tmp_path / "r.sqlite")
    CachedBackend(ScriptedBackend(lambda c: "parent"), _FORK_CACHE).chat([conv("p")], SamplingParams())
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_child_writes, args=(None,)) for _ in range(2)]
    [w.start() for w in workers]
    [w.join(30) for w in workers]
    assert [w.exitcode for w in workers] == [0, 0]
    assert len(_FORK_CACHE) == 11
