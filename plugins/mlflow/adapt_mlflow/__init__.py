"""adapt-mlflow: the mlflow saver and run tracking (to come: issue #7).

This pack registers nothing yet; it exists so the repository layout and the install are final.
"""
