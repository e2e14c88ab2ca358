"""Read a hive-style runs folder with Spark, without gpreempt-trace (`make spark-check`).

Usage: python scripts/spark_check.py RUNS_DIR  — prints rows per run_id for every table.
"""
import sys

from pyspark.sql import SparkSession

root = sys.argv[1]
spark = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false").getOrCreate()
spark.sparkContext.setLogLevel("ERROR")
for table in ("events", "markers", "snapshots"):
    df = spark.read.option("basePath", root).option("mergeSchema", "true").parquet(f"{root}/*/{table}")
    counts = sorted((r["run_id"], r["count"]) for r in df.groupBy("run_id").count().collect())
    print(table, counts)
spark.stop()
