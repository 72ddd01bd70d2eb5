"""The test Hub (tests/utils/servers/hub_server.py) driven by the real clients, over real HTTP, unmocked."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict, load_dataset
from datasets.exceptions import DatasetNotFoundError
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    DatasetCard,
    HfApi,
    HfFileSystem,
    ModelCard,
    ModelCardData,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils.sha import git_hash


@pytest.fixture(autouse=True)
def _every_request_has_a_route(hub_server):
    """A client call the server does not know fails the test that made it."""
    hub_server.unhandled.clear()
    yield
    assert hub_server.unhandled == []


def test_whoami_and_token_errors(hub_server):
    api = HfApi()
    assert api.whoami()["name"] == hub_server.user  # HF_TOKEN from the fixture
    with pytest.raises(HfHubHTTPError, match="Invalid user token"):
        api.whoami(token="hf_not_a_valid_token")
    with pytest.raises(HfHubHTTPError, match="must be authenticated") as no_token:
        api.create_repo(hub_server.new_repo_id(), token=False)
    assert no_token.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError, match="read-only") as read_only:
        api.create_repo(hub_server.new_repo_id(), token=hub_server.read_token)
    assert read_only.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as elsewhere:
        api.create_repo("someone-else/repo")
    assert elsewhere.value.response.status_code == 403


def test_create_repo_visibility_and_exist_ok(hub_server):
    api = HfApi()
    dataset_id, model_id = hub_server.new_repo_id("data"), hub_server.new_repo_id("model", hub_server.org)
    url = api.create_repo(dataset_id, repo_type="dataset", private=True)
    assert (url.repo_type, url.repo_id) == ("dataset", dataset_id)
    assert url == f"{hub_server.url}/datasets/{dataset_id}"
    assert api.create_repo(dataset_id, repo_type="dataset", private=True, exist_ok=True) == url
    with pytest.raises(HfHubHTTPError) as exists:
        api.create_repo(dataset_id, repo_type="dataset")
    assert exists.value.response.status_code == 409
    api.create_repo(model_id, private=False, exist_ok=True)

    assert api.dataset_info(dataset_id).private is True
    assert api.model_info(model_id, token=False).private is False  # public: readable without a token
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info(dataset_id, token=False)  # private: invisible without a token
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(dataset_id)  # wrong repo type
    assert api.list_repo_files(dataset_id, repo_type="dataset") == [".gitattributes"]


def test_upload_list_and_download(hub_server, tmp_path: Path):
    api = HfApi()
    repo_id = hub_server.new_repo_id("files")
    api.create_repo(repo_id)
    weights = bytes(range(256)) * 40
    (tmp_path / "nested" / "deep").mkdir(parents=True)
    (tmp_path / "config.json").write_text('{"a": 1}')
    (tmp_path / "nested" / "notes.txt").write_text("notes")
    (tmp_path / "nested" / "deep" / "model.safetensors").write_bytes(weights)  # an LFS file
    first = api.upload_folder(folder_path=tmp_path, repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"second", path_in_repo="extra.txt", repo_id=repo_id)

    assert api.list_repo_files(repo_id) == [
        ".gitattributes",
        "config.json",
        "extra.txt",
        "nested/deep/model.safetensors",
        "nested/notes.txt",
    ]
    assert Path(hf_hub_download(repo_id, "nested/deep/model.safetensors")).read_bytes() == weights
    assert Path(hf_hub_download(repo_id, "config.json", revision=first.oid)).read_text() == '{"a": 1}'
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "extra.txt", revision=first.oid)

    lfs = get_hf_file_metadata(hf_hub_url(repo_id, "nested/deep/model.safetensors"))
    assert (lfs.etag, lfs.size) == (hashlib.sha256(weights).hexdigest(), len(weights))
    regular = get_hf_file_metadata(hf_hub_url(repo_id, "config.json", revision=first.oid))
    assert (regular.etag, regular.size, regular.commit_hash) == (git_hash(b'{"a": 1}'), 8, first.oid)
    (info,) = api.get_paths_info(repo_id, ["nested/deep/model.safetensors"])
    assert info.lfs is not None and info.lfs.sha256 == lfs.etag
    assert any("/lfs-upload/" in path for _, path, _ in hub_server.requests)  # went through LFS

    with HfFileSystem().open(f"{repo_id}/nested/deep/model.safetensors", "rb", block_size=64) as remote:
        remote.seek(1000)
        assert remote.read(100) == weights[1000:1100]  # ranged GETs
    snapshot = Path(snapshot_download(repo_id, revision=first.oid))
    assert (snapshot / "nested" / "notes.txt").read_text() == "notes" and not (snapshot / "extra.txt").exists()


def test_create_commit_with_deletions(hub_server):
    api = HfApi()
    repo_id = hub_server.new_repo_id("commits")
    api.create_repo(repo_id, repo_type="dataset")
    files = ["keep.txt", "drop.txt", "folder/a.txt", "folder/b.txt"]
    before = api.create_commit(
        repo_id,
        [CommitOperationAdd(path, path.encode()) for path in files],
        commit_message="add",
        repo_type="dataset",
    )
    api.create_commit(
        repo_id,
        [CommitOperationDelete("drop.txt"), CommitOperationDelete("folder/"), CommitOperationAdd("new.txt", b"n")],
        commit_message="delete",
        repo_type="dataset",
        parent_commit=before.oid,
    )
    assert api.list_repo_files(repo_id, repo_type="dataset") == [".gitattributes", "keep.txt", "new.txt"]
    assert api.list_repo_files(repo_id, repo_type="dataset", revision=before.oid)[1:] == sorted(files)
    assert [c.title for c in api.list_repo_commits(repo_id, repo_type="dataset")] == [
        "delete",
        "add",
        "initial commit",
    ]
    with pytest.raises(HfHubHTTPError) as stale:  # the branch moved since `before`
        api.create_commit(
            repo_id, [CommitOperationAdd("x", b"x")], commit_message="x", repo_type="dataset", parent_commit=before.oid
        )
    assert stale.value.response.status_code == 412
    with pytest.raises(EntryNotFoundError):
        api.create_commit(repo_id, [CommitOperationDelete("missing.txt")], commit_message="x", repo_type="dataset")


def test_branches_and_revisions(hub_server):
    api = HfApi()
    repo_id = hub_server.new_repo_id("branches")
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"main", path_in_repo="file.txt", repo_id=repo_id)
    api.create_branch(repo_id, branch="dev")
    api.create_branch(repo_id, branch="dev", exist_ok=True)
    api.upload_file(path_or_fileobj=b"dev", path_in_repo="file.txt", repo_id=repo_id, revision="dev")
    api.create_tag(repo_id, tag="v1", revision="dev")

    assert Path(hf_hub_download(repo_id, "file.txt")).read_bytes() == b"main"
    assert Path(hf_hub_download(repo_id, "file.txt", revision="dev")).read_bytes() == b"dev"
    assert Path(hf_hub_download(repo_id, "file.txt", revision="v1")).read_bytes() == b"dev"
    refs = api.list_repo_refs(repo_id)
    assert {b.name for b in refs.branches} == {"main", "dev"} and [t.name for t in refs.tags] == ["v1"]
    assert api.model_info(repo_id, revision="dev").sha == refs.tags[0].target_commit
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "file.txt", revision="nope")


def test_dataset_dict_push_and_load(hub_server, monkeypatch, tmp_path: Path):
    repo_id = hub_server.new_repo_id("dataset-dict")
    splits = DatasetDict(
        train=Dataset.from_dict({"text": ["a", "b", "c"], "label": [0, 1, 0]}),
        test=Dataset.from_dict({"text": ["d"], "label": [1]}),
    )
    splits.push_to_hub(repo_id, private=True)

    loaded = load_dataset(repo_id)
    assert set(loaded) == {"train", "test"}
    assert loaded["train"].to_dict() == splits["train"].to_dict()
    assert loaded["test"].to_dict() == splits["test"].to_dict()
    monkeypatch.delenv("HF_TOKEN")
    # Private, and no token. A new datasets cache, else datasets falls back to it; the error type
    # depends on which Hub file is not in the huggingface_hub cache yet.
    with pytest.raises((DatasetNotFoundError, RepositoryNotFoundError)):
        load_dataset(repo_id, cache_dir=str(tmp_path))


def test_dataset_configs_push_and_load(hub_server):
    repo_id = hub_server.new_repo_id("dataset-configs")
    rules = Dataset.from_dict({"rule": ["no pii", "no threats"]})
    samples = Dataset.from_dict({"input": ["x", "y", "z"], "label": [True, False, True]})
    rules.push_to_hub(repo_id, config_name="rules")
    samples.push_to_hub(repo_id, config_name="samples", split="test")

    card = DatasetCard.load(repo_id, repo_type="dataset")
    assert {c["config_name"] for c in card.data.configs} == {"rules", "samples"}
    assert load_dataset(repo_id, "rules", split="train").to_dict() == rules.to_dict()
    assert load_dataset(repo_id, "samples", split="test").to_dict() == samples.to_dict()


def test_dataset_push_to_branch(hub_server):
    repo_id = hub_server.new_repo_id("dataset-branch")
    Dataset.from_dict({"v": [1]}).push_to_hub(repo_id)
    Dataset.from_dict({"v": [2, 3]}).push_to_hub(repo_id, revision="v2")
    assert load_dataset(repo_id, split="train")["v"] == [1]
    assert load_dataset(repo_id, split="train", revision="v2")["v"] == [2, 3]


def test_model_card_push_and_load(hub_server):
    repo_id = hub_server.new_repo_id("card")
    HfApi().create_repo(repo_id)
    data = ModelCardData(license="apache-2.0", tags=["guardrail"])
    ModelCard.from_template(data, model_description="A tiny guardrail.").push_to_hub(repo_id)
    card = ModelCard.load(repo_id)
    assert card.data.license == "apache-2.0" and card.data.tags == ["guardrail"]
    assert "A tiny guardrail." in card.text
    with pytest.raises(ValueError, match="Invalid metadata"):  # the server validates README YAML
        HfApi().upload_file(path_or_fileobj=b"---\nlicense: [\n---\n", path_in_repo="README.md", repo_id=repo_id)


def test_transformers_model_push_and_from_pretrained(hub_server):
    import torch
    from transformers import AutoModel, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    model = BertModel(config)
    repo_id = hub_server.new_repo_id("tiny-bert")
    model.push_to_hub(repo_id, private=True)

    loaded = AutoModel.from_pretrained(repo_id)
    assert isinstance(loaded, BertModel)
    expected, found = model.state_dict(), loaded.state_dict()
    assert expected.keys() == found.keys()
    assert all(torch.equal(expected[name], found[name]) for name in expected)
    assert "transformers" in (ModelCard.load(repo_id).data.library_name or "")


def test_peft_adapter_push_and_from_pretrained(hub_server):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    base_state = LlamaForCausalLM(config).state_dict()

    def base_model():
        model = LlamaForCausalLM(config)
        model.load_state_dict(base_state)
        return model

    peft_model = get_peft_model(base_model(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # LoRA B starts at zero: make the adapter non-trivial
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_()
    repo_id = hub_server.new_repo_id("tiny-lora")
    peft_model.push_to_hub(repo_id)

    loaded = PeftModel.from_pretrained(base_model(), repo_id)
    adapter = {k: v for k, v in peft_model.state_dict().items() if "lora_" in k}
    found = {k: v for k, v in loaded.state_dict().items() if "lora_" in k}
    assert adapter.keys() == found.keys() and len(adapter) == 8
    assert all(torch.equal(adapter[name], found[name]) for name in adapter)
    assert set(HfApi().list_repo_files(repo_id)) >= {"adapter_config.json", "adapter_model.safetensors"}


def test_client_in_a_subprocess(hub_server, tmp_path: Path):
    """Code that must import the clients itself gets the server through `client_env()`."""
    import os
    import subprocess
    import sys

    code = "from huggingface_hub import HfApi; print(HfApi().whoami()['name'])"
    env = {**os.environ, **hub_server.client_env(hf_home=tmp_path / "hf_home")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == hub_server.user
