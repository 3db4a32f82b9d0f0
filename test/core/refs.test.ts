import { describe, expect, it } from 'vitest';
import { isBtyError } from '../../src/core/errors.ts';
import { canonicalSrc, imageRefForSrc, tryImageRefForSrc } from '../../src/core/refs.ts';

// Expected refs were computed outside this code base, with
//   printf %s '<canonical>' | sha256sum
// and the canonical forms were cross-checked against upstream's Python canonicaliser
// (urllib.parse.urlsplit / urlunsplit). They pin the wire contract: change one and every binding
// and export bundle made by upstream bty stops matching.
const DIGEST = '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef';

const ACCEPTED: Array<[src: string, canonical: string, ref: string]> = [
  // http(s): scheme + host lower-cased, default port dropped, the rest byte for byte
  [
    'https://example.com/a.img',
    'https://example.com/a.img',
    '38677a2c1ea942a56231187d34e849e8b167a99eb33bafae636c0afd53559488',
  ],
  [
    'HTTPS://Example.COM/A.img',
    'https://example.com/A.img',
    '69150eb89c7fb4476a4535224ea06fec8d5f939837ff604559a957142ca3541a',
  ],
  [
    'http://example.com:80/x',
    'http://example.com/x',
    '83422ef35e89f2d4ed48efa4dc481189bc50296a2fa125a6f9716010b7132da3',
  ],
  [
    'https://example.com:443/x',
    'https://example.com/x',
    '54cef8f42f3f31ad349075022cd36ce1a378d039c1df7af45d61d693d9a35c6a',
  ],
  [
    'http://example.com:443/x',
    'http://example.com:443/x',
    '19a90a5e7c19fb8a0d140a9119ed3ffa666a326494326ed941e62493caed13d0',
  ],
  [
    'https://example.com:8443/x/',
    'https://example.com:8443/x/',
    '52b3faa313ea49178da9245eabf5641784782019793b5325e59fd6019edff72f',
  ],
  [
    'https://user:pw@Example.com/x',
    'https://example.com/x',
    '54cef8f42f3f31ad349075022cd36ce1a378d039c1df7af45d61d693d9a35c6a',
  ],
  [
    'https://h/a%2Fb?q=1&R=2#Frag',
    'https://h/a%2Fb?q=1&R=2#Frag',
    'afc592e29d323a4a90dec0d03d682be9b41cc119865ca2e1ce5cbe96592426a3',
  ],
  // an empty query or fragment disappears (urlunsplit)
  [
    'https://h/a?',
    'https://h/a',
    '616e3352b314cc4b59220a28abeeed9d79b809ae62ec3e54b7daebd2c8de26ac',
  ],
  [
    'https://h/a#',
    'https://h/a',
    '616e3352b314cc4b59220a28abeeed9d79b809ae62ec3e54b7daebd2c8de26ac',
  ],
  ['https://h', 'https://h', 'ecffbe29a2ad0967a2ce50771d65925bc798dfdb80adc2a4085bff9ede606420'],
  [
    'https://h:443',
    'https://h',
    'ecffbe29a2ad0967a2ce50771d65925bc798dfdb80adc2a4085bff9ede606420',
  ],
  ['https://h/', 'https://h/', '29aec5d72901f41b56fcef248c3174df12fd9ba406833078046dca6436476351'],
  [
    'https://H:443?Q#F',
    'https://h?Q#F',
    '098bc05e161492cc3cbe61838aa84ead19aa1c5c06aa68e254fb0533001af738',
  ],
  // an empty port is no port; leading zeros are read as a number
  ['http://h:/x', 'http://h/x', '86ca99740210faa002c7e540649a2601947e24afbb48775eddb3870bc9b97601'],
  [
    'http://h:080/x',
    'http://h/x',
    '86ca99740210faa002c7e540649a2601947e24afbb48775eddb3870bc9b97601',
  ],
  [
    'http://h:0/x',
    'http://h:0/x',
    'f7b8e55330fa2591e52dcc998d13fb36be98649edb5ba1db0d4767dee7bb35d2',
  ],
  // upstream quirk kept for parity: an IPv6 host loses its brackets
  [
    'http://[::1]:8080/x',
    'http://::1:8080/x',
    'dc0fa9e8bbde19c954fc58191413dc45a9264cc9f0a665a11dfbca03766a36ce',
  ],
  // dot segments are not resolved (WHATWG URL would)
  [
    'https://h/./a/../b',
    'https://h/./a/../b',
    'feeb9a5e5916738137a26185bb18db8537b2edbc78befe54b8416e3be0d62a27',
  ],
  // tabs and line breaks vanish (urlsplit)
  [
    'https://h/a\tb\nc',
    'https://h/abc',
    '5dd86f6c85a00a3b7a2ad48ec483691d93719cb1e0985c032bd64a9ddc639223',
  ],
  [
    'https://github.com/safl/nosi/releases/latest/download/catalog.toml',
    'https://github.com/safl/nosi/releases/latest/download/catalog.toml',
    'ab7e934d735796a8f2b59f769348b1206f625abc8f1d9b545cd11a8b3c6ae21c',
  ],
  // oras: host + repository lower-cased, tag case kept
  [
    'oras://ghcr.io/foo/bar:latest',
    'oras://ghcr.io/foo/bar:latest',
    '3e7aacd96c0904afe67e59b38e6d977fd59066b5e65256163340e76281bf9ce7',
  ],
  [
    'oras://GHCR.io/Foo/Bar:LATEST',
    'oras://ghcr.io/foo/bar:LATEST',
    'd5fda1832459303217ea612f84c7f663fa7ca5744c3d6cc896b246136bc90d57',
  ],
  [
    `oras://ghcr.io/a/b@sha256:${DIGEST}`,
    `oras://ghcr.io/a/b@sha256:${DIGEST}`,
    '4332a21fc5a70285d7859e2452e1e47795a393468db8284b0833bd568b47caaa',
  ],
  [
    'oras://reg:5000/a/b:t',
    'oras://reg:5000/a/b:t',
    '3dfbde20abb452371043a18327df40841fa34ba76cafd6cc2262e405b05ce914',
  ],
  [
    'ORAS://Ghcr.io/A/B:v1',
    'oras://ghcr.io/a/b:v1',
    '0913dadb7deb21db8c363f32d4a6a3d83f0bb80f947582758ac6a849e1043c08',
  ],
  // Python's `$` also matches before a final newline; upstream drops it
  [
    'oras://ghcr.io/a/b:tag\n',
    'oras://ghcr.io/a/b:tag',
    '561836c66596fa86b31f77f1f84f8c749541b9b360bd90b3d1eae0f8d8ae18ea',
  ],
  // file://: image-root relative, `.` and empty segments collapse, case kept
  [
    'file:///debian.img.gz',
    'file://debian.img.gz',
    '2851310dad05bf963ec0c718ad83579b4157d4a387b4bc5f6997f2e6c837460d',
  ],
  ['file://a//b', 'file://a/b', '5ab19fbab2180d31e905be9184ac09bced36bda4463d0834946ff4508da398da'],
  ['file://a/b/', 'file://a/b', '5ab19fbab2180d31e905be9184ac09bced36bda4463d0834946ff4508da398da'],
  [
    'file://a/./b/c',
    'file://a/b/c',
    '5b9f44f036a653370b540f61299762f594a175bf7ecf843a8c3e087959c2440b',
  ],
  ['FILE://A/B', 'file://A/B', 'f90ff58e123966be8116a80eb26467250c1a8d8d10608cacf30d97fa41b51b22'],
];

const REJECTED: Array<[src: string, phrase: string]> = [
  ['', 'empty src'],
  ['/abs/path.img', 'unsupported src scheme'],
  ['x.img', 'unsupported src scheme'],
  ['ftp://x/y', 'unsupported src scheme'],
  ['https://', 'http(s) src missing host'],
  ['https:///x', 'http(s) src missing host'],
  ['http://u@/x', 'http(s) src missing host'],
  ['http://h:+80/x', 'Port could not be cast to integer value'],
  ['http://h:abc/x', 'Port could not be cast to integer value'],
  ['http://h:99999/x', 'Port out of range 0-65535'],
  ['http://[::1/x', 'Invalid IPv6 URL'],
  ['http://[1.2.3.4]/x', 'IPv6'],
  ['oras://', 'empty oras src'],
  ['oras://ghcr.io/foo:latest', '<host>/<owner>/<repo>'],
  ['oras://ghcr.io/a/b', 'malformed oras src'],
  ['oras://reg:5000/a/b', 'malformed oras src'],
  [`oras://ghcr.io/a/b@sha256:${DIGEST.toUpperCase()}`, 'malformed oras src'],
  ['oras://ghcr.io/a/b@sha256:0123', 'malformed oras src'],
  ['file://', 'normalises to empty path'],
  ['file:///', 'normalises to empty path'],
  ['file://./.', 'normalises to empty path'],
  ['file://../x', "'..' segment"],
  ['file://a/../x', "'..' segment"],
  ['file://a/\0b', 'NUL byte'],
];

describe('canonicalSrc / imageRefForSrc', () => {
  it.each(ACCEPTED)('%j canonicalises to %j', (src, canonical, ref) => {
    expect(canonicalSrc(src)).toBe(canonical);
    expect(imageRefForSrc(src)).toBe(ref);
    expect(tryImageRefForSrc(src)).toBe(ref);
  });

  it.each(REJECTED)('%j is refused (%s)', (src, phrase) => {
    let caught: unknown;
    try {
      canonicalSrc(src);
    } catch (err) {
      caught = err;
    }
    expect(isBtyError(caught, 'BTY_ERR_SRC_INVALID')).toBe(true);
    expect((caught as Error).message).toContain(phrase);
    expect(tryImageRefForSrc(src)).toBeNull();
  });

  it('keeps tag case significant: :LATEST and :latest are different sources', () => {
    expect(imageRefForSrc('oras://ghcr.io/a/b:LATEST')).not.toBe(
      imageRefForSrc('oras://ghcr.io/a/b:latest'),
    );
  });
});
