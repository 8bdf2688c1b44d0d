"""`--column-weight ATTRIBUTE=W`, a model option of `recsys train` and `recsys evaluate`: an
attribute's weight in the tabular block, checked at the door and named in the report's
command; a weight on an attribute the catalog lacks is said, not silently ignored."""

from __future__ import annotations

import logging

import click
import pandas as pd
import pytest

from recsys.commands.model_options import model_args, parse_column_weights, train_config
from recsys.model.data import CatalogData
from recsys.model.training import _check_column_weights

OPTIONS = {
    "model": "als",
    "factors": 32,
    "iterations": 15,
    "event_weights": (),
    "column_weights": ("oem_number=4", " fitment = 2.5"),
    "half_life_days": 180.0,
    "crawler_share": 0.5,
    "image_method": "simclr",
    "image_epochs": 5,
    "image_time_budget": None,
}


def test_column_weights_shape_the_tabular_block_and_the_reports_command():
    config = train_config(OPTIONS)
    assert dict(config.tabular.column_weights) == {"oem_number": 4.0, "fitment": 2.5}
    args = model_args(config)
    assert "--column-weight fitment=2.5" in " ".join(args)
    assert "--column-weight oem_number=4.0" in " ".join(args)
    assert dict(train_config({**OPTIONS, "column_weights": ()}).tabular.column_weights) == {}


@pytest.mark.parametrize("pair", ["oem_number", "=4", "oem_number=x", "a=-1", "a=101", "a=nan"])
def test_a_bad_column_weight_is_a_usage_error_naming_the_option(pair):
    with pytest.raises(click.BadParameter, match="ATTRIBUTE=NUMBER") as raised:
        parse_column_weights([pair])
    assert raised.value.param_hint == "--column-weight"


def test_a_weight_on_an_attribute_the_catalog_lacks_is_said(caplog):
    data = CatalogData(items=pd.DataFrame({"item_id": ["a"]}), kinds={"brand": "categorical"})
    with caplog.at_level(logging.WARNING, logger="recsys.model.training"):
        _check_column_weights(data, train_config({**OPTIONS, "column_weights": ("brnd=3",)}))
    assert "no attribute 'brnd'" in caplog.text and "brand" in caplog.text
