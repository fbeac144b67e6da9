"""The download's state key: what makes a new download, and what is retried in the old one."""

import dataclasses

import pytest

from lpr_core.data.download import DownloadParams, RetryPassParams
from lpr_core.data.download_state import ATTEMPT_SETTINGS, download_identity
from lpr_core.runtime_params import result_bearing


@pytest.fixture
def urls(tmp_path):
    folder = tmp_path / "urls"
    folder.mkdir()
    (folder / "test_image_url_12.txt").write_text("http://a.example/1.jpg\nhttp://a.example/2.jpg\n")
    return folder


def test_attempt_settings_are_result_bearing_fields_of_the_download_params():
    names = {f.name for f in dataclasses.fields(DownloadParams)}
    assert set(ATTEMPT_SETTINGS) <= names
    assert set(ATTEMPT_SETTINGS) <= set(result_bearing(DownloadParams(allow_private_networks=False)))


@pytest.mark.parametrize("change", [
    {"timeout": 3.0}, {"retries": 2}, {"allow_private_networks": ("127.0.0.0/8",)},
    {"max_response_bytes": 1 << 10}, {"max_fetch_seconds": 99.0},
    {"retry_pass": RetryPassParams(attempts=7)},
    {"processes": 9}, {"thread_count": 3}, {"distributor": "pyspark"},
])
def test_attempt_and_runtime_settings_keep_the_state(urls, change):
    base = DownloadParams(allow_private_networks=False)
    assert download_identity(urls, dataclasses.replace(base, **change)) == download_identity(urls, base)


@pytest.mark.parametrize("change", [
    {"image_size": 64}, {"output_format": "webdataset"}, {"number_sample_per_shard": 10},
    {"encode_quality": 80}, {"resize_only_if_bigger": False},
])
def test_settings_that_shape_a_sample_start_a_new_state(urls, change):
    base = DownloadParams(allow_private_networks=False)
    assert download_identity(urls, dataclasses.replace(base, **change)) != download_identity(urls, base)


def test_a_changed_url_list_starts_a_new_state(urls):
    base = DownloadParams(allow_private_networks=False)
    before = download_identity(urls, base)
    (urls / "test_image_url_12.txt").write_text("http://a.example/1.jpg\n")
    assert download_identity(urls, base) != before
