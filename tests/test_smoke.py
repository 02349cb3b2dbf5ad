from _support import Both, in_, new_token


async def test_round_trip(store: Both) -> None:
    token = new_token()
    await store.commit(token, b"hello", in_(60))
    assert await store.find(token) == b"hello"
