"""edgeml, the host toolchain: from a table of data to a verified model bundle for small devices."""

import warnings

# FLAML imports pyspark.pandas whenever pyspark is installed (the spark extra, docs/cluster.md), and pyspark warns
# on import that it does not yet fully support pandas 3: a line on every user's terminal about a module edgeml
# never uses (the search's Spark backend ships numpy arrays, not pandas-on-Spark frames).
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
