"""`make demo-bigquery`: the whole demo on BigQuery, against an emulator it starts and stops.

Sample data -> BigQuery tables -> `dbt build` on the bigquery target -> `python -m sync`
(publish + materialize into the embedded online store) -> an online lookup -> a training
set from Python and the one dbt built with the macro -> the bytes each query processed.

No BigQuery is needed: bqemulator (tests/bigquery/setup.sh) stands in for it. It reports 0
bytes for every dry run, so the byte figures printed here are only real on BigQuery
(docs/bigquery.md says what the emulator cannot confirm).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sync.offline.bigquery.cost import human_bytes
from sync.offline.bigquery.sample_load import load_sample
from tests.bigquery.emulator import start_emulator
from tests.processes import stop

BIN = Path(sys.executable).parent
DATASET = "feature_store"
RAW_DATASET = "raw"


def run(*args: str, env: dict) -> None:
    print(f"\n$ {' '.join(args)}", flush=True)
    subprocess.run(list(args), cwd=ROOT, env=env, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=50_000, help="sample size (default: 50000)")
    parser.add_argument("--workdir", default=".demo-bigquery", help="where the lake, dbt target and emulator live")
    args = parser.parse_args()
    work = (ROOT / args.workdir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    lake = work / "lake"
    env = {**os.environ, "FEATURE_STORE_LAKE": str(lake), "DBT_TARGET_PATH": str(work / "target"),
           "DBT_LOG_PATH": str(work / "logs")}
    run(str(BIN / "python"), "-m", "sync", "sample-data", "--transactions", str(args.transactions), env=env)

    emulator = start_emulator(work / "emulator")
    try:
        client = emulator.new_client()
        for name in (RAW_DATASET, DATASET):
            client.create_dataset(name, exists_ok=True)
        loaded = load_sample(client, emulator.project, RAW_DATASET, lake / "raw")
        print(f"\nLoaded the sample data into BigQuery dataset {RAW_DATASET}: "
              + ", ".join(f"{t} ({n:,} rows)" for t, n in loaded.items()))
        env.update({
            "FEATURE_STORE_TARGET": "bigquery", "FEATURE_STORE_BQ_PROJECT": emulator.project,
            "FEATURE_STORE_BQ_DATASET": DATASET, "FEATURE_STORE_BQ_RAW_DATASET": RAW_DATASET,
            # the emulator takes any token; on BigQuery use oauth / service-account instead
            "FEATURE_STORE_BQ_METHOD": "oauth-secrets", "FEATURE_STORE_BQ_TOKEN": "emulator",
            "FEATURE_STORE_BQ_ENDPOINT": emulator.rest_url, "FEATURE_STORE_BQ_STORAGE_ENDPOINT": emulator.grpc_address,
        })
        dbt = str(BIN / "dbt")
        run(dbt, "build", "--project-dir", ".", "--profiles-dir", ".", env=env)
        print("\n(The emulator drops PARTITION BY / CLUSTER BY from dbt's DDL, so sync warns that the tables "
              "are not partitioned; on BigQuery they are.)")
        run(str(BIN / "python"), "-m", "sync", env=env)
        run(str(BIN / "python"), "-m", "sync", "lookup", "customer_id=1", env=env)
        spine = (f"select transaction_id, customer_id, merchant_id, transaction_ts, is_fraud "
                 f"from `{emulator.project}.{DATASET}.stg_transactions` order by transaction_ts desc limit 5")
        run(str(BIN / "python"), "-m", "sync", "historical", spine, "--timestamp-column", "transaction_ts",
            "-s", "fraud_detection_v1", "--limit", "5", env=env)

        print("\nThe training set dbt built on BigQuery with the point_in_time_join macro:")
        rows = client.query(f"select transaction_id, transaction_ts, is_fraud, amount_sum_7d, risk_score, "
                            f"pair_txn_count_30d from `{emulator.project}.{DATASET}.fraud_training_set` "
                            "order by transaction_ts desc, transaction_id limit 5").result()
        for row in rows:
            print("  " + ", ".join(f"{k}={v}" for k, v in row.items()))

        registry = json.loads((lake / "registry.json").read_text())
        print("\nBytes processed by sync's BigQuery queries (dry-run estimates; the emulator reports 0, "
              "bench/bench_bigquery.py computes them by BigQuery's sizing rules):")
        for name, view in sorted(registry["feature_views"].items()):
            for state in ((view.get("materialization") or {}).get("online") or {}).values():
                run_ = state.get("last_run") or {}
                print(f"  materialize {name}: {human_bytes(run_.get('bytes_processed'))} "
                      f"({run_.get('mode')}, {run_.get('rows_read', 0):,} rows read)")
    finally:
        stop(emulator.proc)
    print(f"\nDone: the lake, dbt's target and the emulator's log are under {work.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
