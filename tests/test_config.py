from pathlib import Path

import pytest
import yaml

from pipeline.errors import UserError
from pipeline.stages import load_config


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_default_config_is_valid():
    cfg = load_config()
    assert cfg.input.source == "HuggingFaceFW/fineweb-edu" and cfg.input.hf_name == "sample-10BT"


def test_unknown_key_names_file_line_and_suggestion(tmp_path):
    p = write(tmp_path, "run:\n  output: x\nexecutor:\n  taks: 3\n")
    with pytest.raises(UserError) as e:
        load_config(p)
    msg = str(e.value)
    assert f"{p}:4" in msg and "executor.taks" in msg and "did you mean 'tasks'" in msg


def test_wrong_type_names_key_and_expectation(tmp_path):
    p = write(tmp_path, "executor:\n  tasks: many\n")
    with pytest.raises(UserError, match=r"c.yaml:2: executor.tasks: Input should be a valid integer"):
        load_config(p)


def test_filter_params_checked_against_datatrove_signature(tmp_path):
    p = write(tmp_path, "seeds:\n  filters:\n    c4:\n      params: {min_num_sentence: 3}\n")
    with pytest.raises(UserError, match="unknown parameter 'min_num_sentence' for C4QualityFilter"):
        load_config(p)
    p = write(tmp_path, "seeds:\n  filters:\n    gopher_quality:\n      params: {min_doc_words: ten}\n")
    with pytest.raises(UserError, match="GopherQualityFilter.min_doc_words expects int"):
        load_config(p)


def test_overrides(tmp_path):
    cfg = load_config(None, ["executor.tasks=8", "input.limit=10", "seeds.language.languages=[en, fr]"])
    assert cfg.executor.tasks == 8 and cfg.input.limit == 10 and cfg.seeds.language.languages == ["en", "fr"]
    with pytest.raises(UserError, match=r"--set executor.tsks=2: unknown key"):
        load_config(None, ["executor.tsks=2"])
    with pytest.raises(UserError, match="expected key.path=value"):
        load_config(None, ["executor.tasks"])


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match=r"c.yaml:\d+: invalid YAML"):
        load_config(write(tmp_path, "run:\n  output: x\n  bad: [1, 2\nexecutor: {}\n"))
    # an unclosed list on the last line: the error names that line, not the one after the file's end
    with pytest.raises(UserError, match=r"c.yaml:3: invalid YAML"):
        load_config(write(tmp_path, "run:\n  output: x\n  seed: [1, 2\n"))


def test_resolved_config_round_trips():
    cfg = load_config(None, ["executor.tasks=3"])
    again = type(cfg).model_validate(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg and again.hash() == cfg.hash()


def test_every_shipped_config_loads_and_resolves():
    """configs/*.yaml: each loads under the strict schema, and the recipes say what they promise."""
    from pipeline.stages import load_config
    from pipeline.stages.rephrase import load_styles

    folder = Path(__file__).resolve().parent.parent / "configs"
    cfgs = {f.stem: load_config(str(f), []) for f in sorted(folder.glob("*.yaml"))}
    assert {"default", "fineweb-edu-like", "nemotron-like", "cosmopedia-like"} <= set(cfgs)
    edu = cfgs["fineweb-edu-like"]
    assert edu.llm.backend == "openai" and edu.classifier.encoder == "Snowflake/snowflake-arctic-embed-m"
    assert edu.filter.threshold == 3 and edu.classifier.threshold == 3 and edu.annotate.template == "edu"
    ncc = cfgs["nemotron-like"]
    assert len(ncc.classify.classifiers) == 3 and ncc.classify.ensemble and ncc.classify.bins == 20
    assert set(ncc.rephrase.routing["high"]) == {"diverse_qa", "distill", "extract_knowledge", "knowledge_list"}
    assert ncc.rephrase.routing["low"] == ["wrap_medium"]
    load_styles(ncc)  # every routed style exists in prompts/rephrase/styles.yaml
    for cfg in cfgs.values():
        assert cfg.hash() and cfg.executor.kind in ("local", "slurm", "ray")


def test_an_unquoted_slurm_time_stays_a_clock():
    """YAML 1.1 reads `time: 12:00:00` as 43200 (base 60): before, a one-line refusal of a value any Slurm user
    writes; now the clock Slurm expects."""
    from pipeline.stages import load_config

    assert load_config(None, ["executor.slurm.time=12:00:00"]).executor.slurm.time == "12:00:00"
    assert load_config(None, ["executor.slurm.driver_time=1:30:05"]).executor.slurm.driver_time == "1:30:05"


def test_every_config_file_and_readme_snippet_loads(tmp_path):
    """The config files and what README tells a user to type (`--set key=value`, the YAML blocks) validate
    against the config model the registry assembles."""
    import re

    root = Path(__file__).resolve().parent.parent
    for f in sorted((root / "configs").glob("*.yaml")):
        load_config(f)
    readme = (root / "README.md").read_text()
    sets = set(re.findall(r"--set[ =]([a-z_]+(?:\.[a-z_0-9]+)+=(?:\"[^\"]*\"|'[^']*'|\[[^\]]*\]|\{[^}]*\}|[^\s`\]]+))", readme))
    sets.discard("a.b=value")  # the syntax line's placeholder
    assert len(sets) >= 10
    for item in sorted(sets):
        load_config(None, [item.strip("'\"")])
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    assert blocks
    for i, block in enumerate(blocks):
        (tmp_path / f"block-{i}.yaml").write_text(block)
        load_config(tmp_path / f"block-{i}.yaml")


def test_cpu_threads_divide_the_cores_among_workers_and_respect_omp_num_threads(monkeypatch):
    """In-process inference threads per task: the cores this process may use over the workers running at
    once, at most an OMP_NUM_THREADS the user (or a test worker's share of the machine) set."""
    import os

    from pipeline.llm.step import cpu_threads

    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    one = load_config(None, ["executor.tasks=1"])
    assert cpu_threads(one) == cores
    assert cpu_threads(load_config(None, ["executor.tasks=8", "executor.workers=2"])) == max(1, cores // 2)
    assert cpu_threads(load_config(None, ["executor.kind=slurm"])) is None  # a job's cores are Slurm's to give
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpu_threads(one) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "64")
    assert cpu_threads(one) == cores
