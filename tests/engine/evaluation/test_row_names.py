"""Table row names: a sweep's overrides that change what is measured name rows (sorted), the
ones that only say where or how fast do not; checkpoints from elsewhere get rows of their own."""

from omegaconf import OmegaConf

from engine.evaluation.results import eval_row_name, named_row
from engine.training.results import row_name


def test_overrides_are_sorted_and_ignored_keys_cover_their_subkeys():
    first = named_row("m", ["b=2", "a=1", "roots.in_c=/x", "seed=3"], ("roots", "seed"))
    assert first == named_row("m", ["a=1", "b=2", "seed=4"], ("roots", "seed")) == "m (a=1,b=2)"
    assert named_row("m", None, ()) == named_row("m", ["seed=1"], ("seed",)) == "m"


def test_a_sweep_over_models_is_named_by_the_models_but_model_keys_still_count():
    cfg = OmegaConf.create({"name": None, "model": {"model_name": "convnext_atto_dcls"}})
    overrides = ["model=convnext_atto_dcls", "seed=1", "model.drop_path_rate=0.1"]
    assert row_name(cfg, overrides) == "convnext_atto_dcls (model.drop_path_rate=0.1)"
    assert row_name(cfg, ["model=convnext_atto_dcls", "experiment=x"]) == "convnext_atto_dcls"


def test_where_a_run_goes_how_fast_and_what_it_logs_name_no_row():
    cfg = OmegaConf.create({"name": None, "model": {"model_name": "convnext_tiny_dcls"}})
    machine = ["logger=wandb", "trainer.device=cuda", "data.num_workers=16", "trainer.compile=true",
               "model.conv_algorithm=triton", "trainer.preemption.enabled=false"]  # fmt: skip
    smoke = ["debug=default", "data=fake", "experiment=convnext_tiny_dcls_in1k"]
    assert row_name(cfg, [*smoke, *machine]) == "convnext_tiny_dcls (data=fake,debug=default)"
    assert row_name(cfg, machine) == row_name(cfg, None) == "convnext_tiny_dcls"


def test_eval_rows_of_outside_checkpoints_and_of_eval_sweeps_stay_apart():
    # the authors' released file is not one more seed of the runs trained with that model
    outside = eval_row_name(None, "convnext_tiny_dcls", "/ckpt/convnext_dcls_tiny.pth", None)
    assert outside == "convnext_tiny_dcls [convnext_dcls_tiny.pth]"
    assert eval_row_name(None, "convnext_tiny_dcls", None, None) == "convnext_tiny_dcls"
    trained = eval_row_name("convnext_tiny_dcls", "convnext_tiny_dcls", "/run/last.pt", None)
    assert trained == "convnext_tiny_dcls"
    swept = ["checkpoint=/run/last.pt", "sets=[in1k]", "roots.in1k=/val", "transform.crop_pct=0.5"]
    assert eval_row_name("convnext_tiny_dcls", "convnext_tiny_dcls", "/run/last.pt", swept) == (
        "convnext_tiny_dcls (transform.crop_pct=0.5)"
    )
    # other weights or precision are another measurement; the model reading the file is named
    single = ["checkpoint=/f.pth", "model.name=convnext_tiny_dcls", "+model.kwargs.version=v0",
              "run_name=x", "channels_last=true", "weights=model", "amp=null"]  # fmt: skip
    assert eval_row_name(None, "convnext_tiny_dcls", "/f.pth", single) == (
        "convnext_tiny_dcls [f.pth] (amp=null,weights=model)"
    )


def test_the_results_table_shows_a_tiny_models_gmacs():
    from engine.evaluation.results import results_markdown

    results = {"params": 2.52e6, "gmacs": 0.00243, "sets": {}}  # (was "2.52 / 0.00")
    assert "| model | params (M) / GMACs | 2.52 / 0.00243 |" in results_markdown(results)
    assert "| 28.59 / 4.46 |" in results_markdown({**results, "params": 28.59e6, "gmacs": 4.4649})
