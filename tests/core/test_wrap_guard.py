"""A run never trains every weight under a PEFT method's label (peftbench.core.runs.wrap_peft)."""

import pytest
import torch

from peftbench.core.runs import wrap_peft


def model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 4))


def test_a_peft_folder_without_its_config_is_refused(tmp_path):
    folder = tmp_path / "lora" / "rank8"
    folder.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="adapter_config.json: missing"):
        wrap_peft(model(), folder, {})


@pytest.mark.parametrize("layout", ["method", "marker"])
def test_full_finetuning_folders_train_every_weight(tmp_path, layout):
    folder = tmp_path / ("full-finetuning" if layout == "method" else "mine") / "a"
    folder.mkdir(parents=True)
    if layout == "marker":
        (folder / "FULL_FINETUNING").write_text("")
    wrapped, config = wrap_peft(model(), folder, {})
    assert config is None and all(p.requires_grad for p in wrapped.parameters())
