"""The RFC 8941 List and Dictionary subset used by the IETF RateLimit fields."""

from __future__ import annotations

import pytest

from ratelimitd.core.headers.structured_fields import Item, Token, parse_dictionary, parse_list


def test_list_of_strings_with_parameters() -> None:
    # draft-ietf-httpapi-ratelimit-headers-10 §3
    items = parse_list('"burst";q=100;w=60,"daily";q=1000;w=86400')
    assert items == [
        Item("burst", {"q": 100, "w": 60}),
        Item("daily", {"q": 1000, "w": 86400}),
    ]


def test_bare_item_kinds() -> None:
    items = parse_list('10, -3, 1.25, ?1, ?0, tok*en:/x, "a \\"q\\" \\\\", :aGk=:, *star')
    assert [item.value for item in items] == [
        10,
        -3,
        1.25,
        True,
        False,
        Token("tok*en:/x"),
        'a "q" \\',
        b"hi",
        Token("*star"),
    ]


def test_parameter_without_value_is_true_and_last_key_wins() -> None:
    (item,) = parse_list("1;flag;w=5;w=6")
    assert item.params == {"flag": True, "w": 6}


def test_whitespace_rules() -> None:
    assert parse_list("  1 ,\t2  ") == [Item(1), Item(2)]
    assert parse_list("") == []
    assert parse_dictionary("   ") == {}


def test_inner_list_is_parsed() -> None:
    (item,) = parse_list('("a" "b");p=1')
    assert item.value == (Item("a"), Item("b"))
    assert item.params == {"p": 1}


def test_dictionary_draft07_form() -> None:
    members = parse_dictionary("limit=100, remaining=50, reset=5, flag")
    assert {k: v.value for k, v in members.items()} == {
        "limit": 100,
        "remaining": 50,
        "reset": 5,
        "flag": True,
    }


@pytest.mark.parametrize(
    "text",
    [
        "1,",
        ",1",
        "1 2",
        '"unterminated',
        '"bad \\n escape"',
        "1234567890123456",  # 16 digits: RFC 8941 allows 15
        "1.2345",  # 4 fraction digits: allows 3
        "1.",
        "?2",
        ":not base64!:",
        "(1 2",
        "é",
        "1;Upper=2",
        "=5",
    ],
)
def test_list_syntax_errors_raise(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the parser's one error type
        parse_list(text)


@pytest.mark.parametrize("text", ["Limit=1", "a=1,", "a=1 b=2", '"x"=1', 'a="open'])
def test_dictionary_syntax_errors_raise(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the parser's one error type
        parse_dictionary(text)
