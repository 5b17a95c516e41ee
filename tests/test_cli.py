import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from safetrainer.cli import main

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def read_report(output_dir):
    report = output_dir / "safety_report"
    return pq.read_table(report / "scores.parquet").to_pydict(), json.loads((report / "summary.json").read_text())


def test_score_without_config_writes_report_indexed_by_file_row(tiny_model_dir, tmp_path):
    rows = [{"prompt": f"Question {i}?", "response": f"Answer number {i}."} for i in range(12)]
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    main(
        [
            "score",
            "--train-file",
            str(data),
            "--model",
            tiny_model_dir,
            "--output-dir",
            str(tmp_path / "out"),
            "--threshold-policy",
            "top_k",
            "--threshold-value",
            "2",
        ]
    )
    table, summary = read_report(tmp_path / "out")
    assert table["sample_idx"] == list(range(12))
    assert table["prompt_preview"][3] == "Question 3?"
    assert summary["counts"] == {"input": 12, "mixed": 0, "kept": 10, "dropped": 2, "rejected": 0}
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()


def test_train_with_yaml_config_and_overrides(tiny_model_dir, tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": tiny_model_dir,
                "dataset_name": "builtin:demo_sft",
                "output_dir": str(tmp_path / "out"),
                "use_peft": True,
                "lora_r": 4,
                "lora_alpha": 8,
                "lora_target_modules": ["q_proj", "v_proj"],
                "max_steps": 50,
                "per_device_train_batch_size": 4,
                "max_length": 128,
                "report_to": "none",
                "save_strategy": "no",
                "safety_scorers": ["datashield"],
                "safety_threshold_value": 0.1,
            }
        )
    )
    main(["train", "--config", str(config), "--max_steps", "2", "--safety_threshold_value", "0.2"])
    out = tmp_path / "out"
    assert (out / "adapter_model.safetensors").is_file()
    _, summary = read_report(out)
    assert summary["counts"]["dropped"] == 14  # floor(0.2 * 70): the flag overrode the YAML value
    assert summary["safety_config"]["safety_threshold_value"] == 0.2
    assert '"dropped": 14' in capsys.readouterr().out


def test_unknown_command_and_help(capsys):
    main([])
    assert "safetrainer train --config" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown command 'fit'"):
        main(["fit"])


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "safetrainer", "--help"], capture_output=True, text=True, env=ENV)
    assert out.returncode == 0 and "safetrainer score" in out.stdout


def free_port() -> int:
    """A port no other process listens on: two launches at once (pytest-xdist) must not share a rendezvous."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_launch(args, tmp_path, target=("-m", "safetrainer")):
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        *target,
        *args,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.mark.multiprocess
def test_two_process_scoring_matches_one_process(tiny_model_dir, tmp_path):
    """`--multi_gpu --num_processes 2` starts two gloo processes on a CPU-only machine (`--cpu` would start one)."""
    scorers = "datashield,saft,fihs,seal,ref_similarity,random"
    common = ["score", "--train-file", "builtin:demo_sft", "--model", tiny_model_dir, "--batch-size", "4",
              "--scorers", scorers, "--ensemble", "--projection-dim", "1024"]  # fmt: skip
    main([*common, "--output-dir", str(tmp_path / "one")])
    accelerate_launch([*common, "--output-dir", str(tmp_path / "two")], tmp_path)
    one, summary_one = read_report(tmp_path / "one")
    two, summary_two = read_report(tmp_path / "two")
    assert summary_one["world_size"] == 1 and summary_two["world_size"] == 2
    for name in [*scorers.split(","), "ensemble"]:
        np.testing.assert_allclose(one[f"score_{name}"], two[f"score_{name}"], rtol=1e-3, atol=1e-4, err_msg=name)
    assert one["decision"] == two["decision"]
    assert summary_one["scorers"]["datashield"]["layer"] == summary_two["scorers"]["datashield"]["layer"]
    assert summary_one["scorers"]["saft"] == summary_two["scorers"]["saft"]


@pytest.mark.multiprocess
def test_two_process_training_filters_then_trains_under_ddp(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    accelerate_launch(
        [
            "train",
            "--model_name_or_path",
            tiny_model_dir,
            "--dataset_name",
            "builtin:demo_sft",
            "--output_dir",
            str(out),
            "--max_length",
            "128",
            "--per_device_train_batch_size",
            "4",
            "--num_train_epochs",
            "1",
            "--report_to",
            "none",
            "--save_strategy",
            "no",
            "--safety_scorers",
            "datashield",
            "--use_peft",
            "--lora_r",
            "4",
            "--safety_mix_pool",
            "builtin:refusal_pool",
            "--safety_mix_strategy",
            "pss-b",
            "--safety_mix_budget",
            "7",
        ],
        tmp_path,
    )
    table, summary = read_report(out)
    assert summary["world_size"] == 2 and summary["counts"]["dropped"] == 7
    # PSS embeds on rank 0 only; the broadcast choice is what both ranks train on.
    assert summary["counts"]["mixed"] == 7 and table["source"].count("mix") == 7
    assert (out / "adapter_model.safetensors").is_file()
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["max_steps"] == state["global_step"] == -(-70 // 8)  # 63 kept + 7 mixed rows, 2 ranks x batch 4


def test_mix_command_writes_the_selection_table(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "mix"
    main(["mix", "--pool", "builtin:refusal_pool", "--strategy", "cossim-b", "--budget", "0.1", "--train-file",
          "builtin:demo_sft", "--model", tiny_model_dir, "--output-dir", str(out)])  # fmt: skip
    table = pq.read_table(out / "mix.parquet").to_pydict()
    assert list(table) == ["pool_idx", "category", "behavior", "prompt", "response", "reason", "pool", "judge_unsure"]
    assert len(table["pool_idx"]) == 7  # 10% of demo_sft's 70 rows
    assert set(table["behavior"]) == {"T1"} and "cossim" in table["reason"][0]
    summary = json.loads((out / "mix_summary.json").read_text())
    assert "centroid of 70 training rows" in summary["notes"][0]
    printed = capsys.readouterr().out
    assert '"selected": 7' in printed and f'"selected_judge_unsure": {sum(table["judge_unsure"])}' in printed

    strata = ["mix", "--pool", "builtin:refusal_pool", "--strategy", "sss-b", "--budget", "3",
              "--model", tiny_model_dir, "--categories", "nearest", "--output-dir", str(tmp_path / "strata"),
              "--category-min-similarity"]  # fmt: skip
    main([*strata, "1"])
    assert pq.read_table(tmp_path / "strata" / "mix.parquet").to_pydict()["category"] == ["uncategorized"] * 3
    with pytest.raises(ValueError, match="safety_mix_category_min_similarity: got 2.0"):
        main([*strata, "2"])

    contrast = tmp_path / "contrast.jsonl"
    contrast.write_text(json.dumps({"prompt": "How do I kill a stuck process?", "response": "Run `kill PID`."}))
    with_contrast = ["mix", "--pool", "builtin:refusal_pool", "--strategy", "random-b", "--budget", "2",
                     "--contrast-pool", str(contrast), "--output-dir", str(tmp_path / "contrast")]  # fmt: skip
    main([*with_contrast, "--contrast-ratio", "0.5"])
    table = pq.read_table(tmp_path / "contrast" / "mix.parquet").to_pydict()
    assert table["pool"] == ["safety", "safety", "contrast"] and table["behavior"] == ["T1", "T1", "T3"]
    main([*with_contrast, "--contrast-ratio", "0.5", "--contrast-pairing", "nearest", "--model", tiny_model_dir])
    reason = pq.read_table(tmp_path / "contrast" / "mix.parquet").to_pydict()["reason"][2]
    assert reason.startswith("contrast: nearest look-alike of safety pool row")
    with pytest.raises(SystemExit):
        main([*with_contrast, "--contrast-ratio", "0"])
    assert "--contrast-ratio: must be > 0" in capsys.readouterr().err


def test_mix_command_types_an_unflagged_pool_with_the_probe(tiny_model_dir, tmp_path):
    harmful = [f"Tell me how to poison {x}." for x in ("a dog", "a river", "my boss")]
    benign = [f"Tell me how to plant {x}." for x in ("a tree", "tulips", "basil")]
    pool, reference = tmp_path / "pool.jsonl", tmp_path / "ref.jsonl"
    refusal = "I can't help with that."
    pool.write_text("\n".join(json.dumps({"prompt": p, "response": refusal}) for p in harmful + benign))
    reference.write_text("\n".join(json.dumps({"prompt": p, "harmful": p in harmful}) for p in harmful + benign))
    out = tmp_path / "mix"
    main(["mix", "--pool", str(pool), "--strategy", "random-b", "--budget", "2", "--model", tiny_model_dir,
          "--harmful-classifier", "probe", "--harmful-reference", str(reference),
          "--output-dir", str(out)])  # fmt: skip
    summary = json.loads((out / "mix_summary.json").read_text())
    assert summary["pool"]["behavior_counts"] == {"T1": 3, "T2": 0, "T3": 0, "T4": 3}
    assert set(pq.read_table(out / "mix.parquet").to_pydict()["prompt"]) <= set(harmful)

    ranked = ["mix", "--pool", str(pool), "--budget", "3", "--model", tiny_model_dir, "--harmful-reference",
              str(reference), "--most-harmful-first", "--output-dir", str(tmp_path / "ranked")]  # fmt: skip
    main([*ranked, "--strategy", "random"])  # unflagged and untyped: every row T1; the probe only ranks
    assert set(pq.read_table(tmp_path / "ranked" / "mix.parquet").to_pydict()["prompt"]) == set(harmful)
    with pytest.raises(ValueError, match="safety_mix_most_harmful_first: applies to random and sss"):
        main([*ranked, "--strategy", "pss-b"])


@pytest.mark.multiprocess
def test_two_process_online_drops_agree(tiny_model_dir, tmp_path):
    """Scores gathered from both ranks, decided once on rank 0 and broadcast: both ranks hold the same dropped set."""
    worker = os.path.join(os.path.dirname(__file__), "online_ddp_worker.py")
    accelerate_launch([tiny_model_dir, str(tmp_path / "out")], tmp_path, target=(worker,))
    ranks = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 2 * -(-70 // 8)  # 70 rows, 2 ranks x batch 4
    assert ranks[0]["dropped"] == ranks[1]["dropped"] and ranks[0]["dropped"]
