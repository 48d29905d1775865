#!/usr/bin/env python3
"""Writes the seed corpus (fuzz/seeds/TARGET/*): a few valid inputs per target, by hand
in bincode's varint encoding, so the fuzzer starts from frames the server accepts.
Run it again after changing the wire types: python3 fuzz/seeds.py"""
import os, struct

here = os.path.dirname(os.path.abspath(__file__))

def v(n):  # bincode varint
    if n < 251: return bytes([n])
    if n < 1 << 16: return b'\xfb' + struct.pack('<H', n)
    if n < 1 << 32: return b'\xfc' + struct.pack('<I', n)
    return b'\xfd' + struct.pack('<Q', n)

def s(text): b = text.encode(); return v(len(b)) + b
def some(x): return b'\x01' + x
NONE = b'\x00'
DOC, LIST, MAP, STREAM = v(0), v(1), v(2), v(3)
def idx(i): return v(0) + v(i)
def key(k): return v(1) + s(k)

requests = {
    'hello_key': v(0) + v(1) + s('SK' + '0' * 32) + s('secret') + some(s('default')),
    'hello_token': v(0) + v(0) + s('eyJhbGciOiJIUzI1NiJ9.e30.sig') + NONE,
    'ping': v(2),
    'doc_get': v(3) + s('room'),
    'doc_set': v(4) + s('room') + s('{"a":1,"b":[true,null,"x"]}') + some(v(3)) + some(v(60)),
    'doc_update': v(5) + s('room') + s('{"a":null,"c":{"d":1.5}}') + NONE,
    'create_list': v(6) + LIST + some(s('todo')) + NONE,
    'fetch': v(7) + s('ES' + 'a' * 32),
    'delete': v(8) + some(MAP) + s('m') + some(v(9)),
    'list_push': v(9) + s('todo') + s('"milk"') + some(v(0)),
    'item_get': v(10) + MAP + s('m') + key('k'),
    'item_set': v(11) + LIST + s('todo') + idx(4) + s('{"done":true}') + NONE + NONE,
    'item_update': v(12) + MAP + s('m') + key('k') + s('{"x":1}') + some(v(2)),
    'item_remove': v(13) + LIST + s('l') + idx(300) + NONE,
    'items': v(14) + MAP + s('m') + some(key('a')) + v(1) + v(100),
    'publish': v(15) + s('chat') + s('{"text":"hi"}'),
    'subscribe': v(16) + v(1) + s('room') + some(v(5)) + some(v(10)),
    'unsubscribe': v(17) + v(1),
    'service_list': v(19),
    'key_revoke': v(25) + s('SK' + '1' * 32),
    'grant': v(26) + s('room') + s('*') + v(1) + v(1) + v(0),
    'revoke': v(27) + s('room') + s('alice'),
    'permission_list': v(28) + s('room'),
}

def put(target, name, data):
    d = os.path.join(here, 'seeds', target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)

for i, (name, body) in enumerate(requests.items()):
    frame_id = [1, 7, 250, 251, 70000, 1 << 40][i % 6]
    body = v(frame_id) + body
    put('request', name, body)
    # frame: [limit selector, piece size, stream...]: 64 KiB limit, pieces of 5.
    put('frame', name, bytes([4, 4]) + struct.pack('>I', len(body)) + body)
# Two frames in one stream, and an oversized one followed by a good one.
ping = v(3) + v(2)
put('frame', 'two', bytes([3, 0]) + (struct.pack('>I', len(ping)) + ping) * 2)
put('frame', 'oversized', bytes([1, 2]) + struct.pack('>I', 100) + bytes(100)
    + struct.pack('>I', len(ping)) + ping)

forms = {
    'doc': b'PageSize=5&PageToken=abc\x00Data=%7B%22a%22%3A+1%7D&Ttl=60&UniqueName=room',
    'item': b'\x00Key=k&ItemTtl=10&Data=%5B1%2C2%5D&CollectionTtl=0',
    'perm': b'\x00Read=true&Write=False&Manage=maybe',
    'service': b'Order=desc&Bounds=inclusive&From=3\x00AclEnabled=true&ReachabilityDebouncingWindow=5000&WebhookUrl=',
}
for name, data in forms.items():
    put('form', name, data)

objects = {
    'merge': b'\x00\x40\x00' + b'{"a":1,"b":2}' + b'\x00' + b'{"a":null,"c":3}',
    'doc': b'\x01\x10\x00' + b'{"x":[1,2]}' + b'\x00' + b'{"y":"z"}',
    'push': b'\x04\x10\x01' + b'null' + b'\x00' + b'"milk"',
    'item': b'\x06\x20\x02' + b'{"n":1}' + b'\x00' + b'{"n":2}',
}
for name, data in objects.items():
    put('objects', name, data)
