"""crmodel's front door: the Python API (`crmodel.api`) and the `crmodel` command."""
