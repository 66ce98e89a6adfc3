"""search_spaces.registry: one registry type for every plug-in kind."""
from __future__ import annotations

import pytest

from nas_llm.errors import ConfigError
from search_spaces.registry import Registry, UnknownNameError


class Base:
    pass


def test_register_resolve_and_did_you_mean():
    reg = Registry("widget", base=Base)

    @reg.register("alpha", colour="red")
    class Alpha(Base):
        pass

    assert reg.resolve("alpha") is Alpha and Alpha.colour == "red"
    with pytest.raises(UnknownNameError, match="Did you mean 'alpha'"):
        reg.resolve("alpah")
    with pytest.raises(KeyError):  # still a KeyError for callers that caught one
        reg.resolve("zzz")


def test_a_name_registered_twice_is_refused_and_the_second_class_is_left_alone():
    reg = Registry("widget")

    @reg.register("a")
    class A:
        pass

    class B:
        pass

    with pytest.raises(ConfigError, match="registered twice"):
        reg.register("a", colour="blue")(B)
    assert not hasattr(B, "colour") and reg.resolve("a") is A
    reg.register("a")(A)  # the same object again is fine (a module imported twice)


def test_base_class_is_checked():
    reg = Registry("widget", base=Base)
    with pytest.raises(ConfigError, match="not a subclass of Base"):
        reg.add("x", int)


def test_lazy_entries_are_imported_on_first_use():
    reg = Registry("widget")
    reg.add("od", "collections:OrderedDict")
    import collections

    assert reg.resolve("od") is collections.OrderedDict
    assert reg.resolve("collections:Counter") is collections.Counter  # an import path without registering
    with pytest.raises(ImportError, match="no attribute 'Nope'"):
        reg.resolve("collections:Nope")
