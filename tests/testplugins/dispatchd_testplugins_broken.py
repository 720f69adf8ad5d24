"""A plugin module that cannot be imported."""

raise ImportError("dispatchd_testplugins_broken is broken on purpose")
