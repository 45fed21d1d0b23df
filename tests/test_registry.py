import pytest

from mtlbench.registry import Registry, UnknownNameError


def make() -> Registry[int]:
    reg: Registry[int] = Registry("method")
    for i, name in enumerate(["unet", "cunet", "cugnet", "acsnet"]):
        reg.register(name, i)
    return reg


def test_duplicate_names_are_refused():
    reg = make()
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("unet", 9)


def test_names_must_be_lowercase():
    with pytest.raises(ValueError, match="lowercase"):
        make().register("UNet", 1)


def test_select_all_wildcards_groups_in_registry_order():
    reg = make()
    assert reg.select("all") == ["unet", "cunet", "cugnet", "acsnet"]
    assert reg.select("cu*") == ["cunet", "cugnet"]
    assert reg.select("acsnet,unet,unet") == ["unet", "acsnet"]
    assert reg.select("table1", groups=lambda g: ["cugnet"] if g == "table1" else []) == ["cugnet"]


def test_unknown_name_lists_valid_ones_and_suggests():
    with pytest.raises(UnknownNameError) as info:
        make().select("unte")
    message = str(info.value)
    assert "unknown method 'unte'" in message
    assert "Did you mean 'unet'" in message
    assert "acsnet" in message


def test_wildcard_that_matches_nothing_is_an_error():
    with pytest.raises(UnknownNameError):
        make().select("zz*")
