"""Example fusionseg encoder plugin: `ExampleConvEncoder`, registered as `example_conv`."""

from fusionseg_plugin_example.encoder import ExampleConvEncoder

__all__ = ["ExampleConvEncoder"]
