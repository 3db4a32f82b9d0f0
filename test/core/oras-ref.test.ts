import { describe, expect, it } from 'vitest';
import { isBtyError } from '../../src/core/errors.ts';
import { formatOrasRef, parseOrasRef } from '../../src/core/oras-ref.ts';

const DIGEST = 'sha256:' + 'ab'.repeat(32);

function refusal(ref: string): Error {
  try {
    parseOrasRef(ref);
  } catch (err) {
    expect(isBtyError(err, 'BTY_ERR_SRC_INVALID')).toBe(true);
    return err as Error;
  }
  throw new Error(`expected ${ref} to be refused`);
}

describe('parseOrasRef', () => {
  it('parses a tag reference', () => {
    expect(parseOrasRef('oras://ghcr.io/safl/nosi/debian-sysdev:latest')).toEqual({
      host: 'ghcr.io',
      repository: 'safl/nosi/debian-sysdev',
      tag: 'latest',
      digest: null,
    });
  });

  it('parses a digest reference', () => {
    expect(parseOrasRef(`oras://ghcr.io/a/b@${DIGEST}`)).toEqual({
      host: 'ghcr.io',
      repository: 'a/b',
      tag: null,
      digest: DIGEST,
    });
  });

  it('keeps a registry port with the host and tag case as written', () => {
    expect(parseOrasRef('oras://Registry.Example.com:5000/team/img:V1.2_rc-1')).toEqual({
      host: 'Registry.Example.com:5000',
      repository: 'team/img',
      tag: 'V1.2_rc-1',
      digest: null,
    });
  });

  it('refuses anything that is not oras://', () => {
    expect(refusal('https://ghcr.io/a/b:1').message).toBe(
      "not an oras:// reference: 'https://ghcr.io/a/b:1'",
    );
    expect(refusal('ORAS://ghcr.io/a/b:1').message).toContain('not an oras:// reference');
  });

  it('refuses an empty body', () => {
    expect(refusal('oras://').message).toBe("empty oras:// reference: 'oras://'");
  });

  it.each([
    'oras://ghcr.io/a/b', // neither tag nor digest
    'oras://ghcr.io/A/b:1', // upper-case repository
    'oras://ghcr.io/a/b@sha256:abc', // short digest
    `oras://ghcr.io/a/b@${DIGEST.toUpperCase().replace('SHA256', 'sha256')}`, // upper-case hex
    'oras://ghcr.io/a/b@sha512:' + 'ab'.repeat(64), // other algorithms
    'oras://-ghcr.io/a/b:1', // host starting with a dash
    'oras://ghcr.io/a/b:t@g', // tag with a stray character
    'oras://reg:5000/a/b', // port colon taken for the tag separator
  ])('refuses malformed %j with the expected shapes', (ref) => {
    const message = refusal(ref).message;
    expect(message).toContain('malformed oras:// reference');
    expect(message).toContain('expected oras://<host>/<owner>/<repo>:<tag>');
  });

  it('refuses a repository without an owner', () => {
    expect(refusal('oras://ghcr.io/foo:latest').message).toBe(
      "oras:// reference must include <host>/<owner>/<repo>: 'oras://ghcr.io/foo:latest' " +
        "(got bare repo 'foo' after host)",
    );
  });
});

describe('formatOrasRef', () => {
  it('round-trips tag and digest references', () => {
    for (const ref of ['oras://ghcr.io/a/b:latest', `oras://reg:5000/a/b/c@${DIGEST}`]) {
      expect(formatOrasRef(parseOrasRef(ref))).toBe(ref);
    }
  });
});
