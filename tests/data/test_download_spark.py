"""lpr_core.data.download_spark: which Spark session the ``pyspark`` distributor runs on.

The master's resolution is checked on a table of environments; a caller's active session is
checked with a real local Spark (a JVM: slow) on which img2dataset downloads one list. The whole
stage on Spark is compared with ``multiprocessing`` in ``tests/stages/test_download.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lpr_core.data.download_spark import DownloadSpark, SparkSessionError, resolve_master


def test_master_from_the_environment_else_local_processes(tmp_path):
    assert resolve_master({}, 3) == ("local[3]", "download.processes")
    assert resolve_master({"MASTER": "spark://head:7077"}, 3) == ("spark://head:7077", "MASTER")
    args = "--conf spark.ui.enabled=false --master k8s://https://kubernetes.default.svc pyspark-shell"
    assert resolve_master({"PYSPARK_SUBMIT_ARGS": args}, 3) == ("k8s://https://kubernetes.default.svc",
                                                                "PYSPARK_SUBMIT_ARGS")
    assert resolve_master({"PYSPARK_SUBMIT_ARGS": "--master=local[5] pyspark-shell"}, 3)[0] == "local[5]"
    assert resolve_master({"PYSPARK_SUBMIT_ARGS": "--conf a=b pyspark-shell"}, 3)[0] == "local[3]"
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "spark-defaults.conf").write_text("# cluster\nspark.executor.memory  4g\nspark.master   spark://sm:7077\n")
    assert resolve_master({"SPARK_CONF_DIR": str(conf)}, 3) == ("spark://sm:7077", "spark-defaults.conf")
    assert resolve_master({"SPARK_HOME": str(tmp_path)}, 3) == ("spark://sm:7077", "spark-defaults.conf")
    # MASTER wins over the defaults file, as with spark-submit
    assert resolve_master({"SPARK_CONF_DIR": str(conf), "MASTER": "local[1]"}, 3)[0] == "local[1]"
    assert resolve_master({"SPARK_CONF_DIR": str(tmp_path / "none")}, 2)[0] == "local[2]"
    # started by spark-submit (a Spark Operator driver): its master stands, whatever else is set
    assert resolve_master({"PYSPARK_GATEWAY_PORT": "41234", "MASTER": "local[1]"}, 2) == (None, "spark-submit")


def test_spark_connect_is_refused_with_the_reason():
    spark = DownloadSpark(2, log=lambda _: None, environ={"SPARK_REMOTE": "sc://spark:15002"})
    with pytest.raises(SparkSessionError, match="Spark Connect cannot run img2dataset's pyspark distributor"):
        spark.get()
    assert spark.session is None
    spark.stop()  # nothing to stop


@pytest.mark.slow
@pytest.mark.integration
def test_img2dataset_runs_on_the_callers_active_session_and_leaves_it_running(tmp_path, monkeypatch):
    import signal

    from pyspark.sql import SparkSession

    from lpr_core.data.download import DownloadParams, prepare_input, read_url_list, run_img2dataset
    from lpr_core.synth import ImageServer, generate_world

    world = generate_world(tmp_path / "world", size="tiny", seed=0).out_dir
    (src,) = sorted(world.glob("test_image_url_*.txt"))
    # the caller's own session, as a driver script would make it (its workers run this Python)
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    sigint = signal.getsignal(signal.SIGINT)
    spark = SparkSession.builder.master("local[1]").appName("caller").config("spark.ui.enabled", "false").getOrCreate()
    signal.signal(signal.SIGINT, sigint)  # a SparkContext installs its own handler
    try:
        messages: list[str] = []
        with ImageServer(world) as server:
            urls = tmp_path / "urls" / src.name
            urls.parent.mkdir()
            urls.write_text("".join(server.url_prefix + line.rsplit("/", 1)[1] + "\n"
                                    for line in src.read_text().split()))
            url_list = read_url_list(urls, "test_image_urls")
            params = DownloadParams(distributor="pyspark", processes=1, thread_count=4, number_sample_per_shard=5,
                                    allow_private_networks=("127.0.0.1/32",))
            folder = tmp_path / "out" / "test_images"
            folder.mkdir(parents=True)
            prepare_input(url_list, folder, params)
            session = DownloadSpark(params.processes, log=messages.append)
            run_img2dataset(folder / "_urls.parquet", folder, len(url_list.urls), params, messages.append,
                            spark=session)
            session.stop()
        assert any("using the active SparkSession (master local[1])" in m for m in messages), messages
        assert not any("starting a SparkSession" in m for m in messages)
        # img2dataset's shards ran as jobs of the caller's session, which is still up
        assert SparkSession.getActiveSession() is spark and not spark.sparkContext._jsc.sc().isStopped()
        assert len(spark.sparkContext.statusTracker().getJobIdsForGroup()) >= 1
        from lpr_core.data.manifest import complete_shards

        shards = complete_shards(folder)
        assert len(shards) == 3
        import pyarrow.parquet as pq

        rows = [r for _, p in shards for r in pq.read_table(p).to_pylist()]
        assert sorted(r["url"] for r in rows) == sorted(url_list.urls)
        assert all(r["status"] == "success" for r in rows)
        assert all((folder / r["key"][:5] / f"{r['key']}.jpg").is_file() for r in rows)
    finally:
        spark.stop()
    assert not Path(tmp_path / "out" / "test_images" / "_tmp").exists()
