"""Hosting EchoNext apps as async, threaded and multiprocess backends, with load reports."""
