/**
 * Where registry logins come from, and which registries may be spoken to over plain HTTP.
 *
 * Logins: `BTY_ORAS_USERNAME` / `BTY_ORAS_PASSWORD` (any registry, or those listed in
 * `BTY_ORAS_REGISTRY`), else the `auths` of the
 * Docker client configuration (`$DOCKER_CONFIG/config.json`, default `~/.docker/config.json`),
 * the file `docker login`, `oras login` and `podman login --compat-auth-file` write. Credential
 * helpers (`credsStore`) are not run: bty starts no programs to find passwords.
 */
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';

export interface Login {
  username: string;
  password: string;
  /** Where it came from, for messages (never the secret itself). */
  from: string;
}

interface DockerAuthEntry {
  auth?: unknown;
  username?: unknown;
  password?: unknown;
  identitytoken?: unknown;
}

/** The keys a Docker config may file one registry under. */
function authKeys(host: string): string[] {
  const keys = [host, `https://${host}`, `http://${host}`, `https://${host}/v1/`];
  if (host === 'docker.io' || host === 'registry-1.docker.io') {
    keys.push('https://index.docker.io/v1/', 'index.docker.io');
  }
  return keys;
}

function decodeAuth(entry: DockerAuthEntry): { username: string; password: string } | null {
  if (typeof entry.username === 'string' && typeof entry.password === 'string') {
    return { username: entry.username, password: entry.password };
  }
  if (typeof entry.auth === 'string' && entry.auth !== '') {
    const text = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = text.indexOf(':');
    if (colon > 0) return { username: text.slice(0, colon), password: text.slice(colon + 1) };
  }
  return null;
}

/** The login to use for `host` (as written in the reference, port included), or null. */
export async function loginFor(
  host: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Login | null> {
  const user = env.BTY_ORAS_USERNAME;
  const password = env.BTY_ORAS_PASSWORD;
  // BTY_ORAS_REGISTRY (host[:port],...) limits the login to those registries, so a catalog
  // naming another registry never receives it.
  const scope = (env.BTY_ORAS_REGISTRY ?? '')
    .split(',')
    .map((h) => h.trim().toLowerCase())
    .filter(Boolean);
  if (
    user &&
    password !== undefined &&
    (scope.length === 0 || scope.includes(host.toLowerCase()))
  ) {
    return { username: user, password, from: 'BTY_ORAS_USERNAME/BTY_ORAS_PASSWORD' };
  }
  const dir = env.DOCKER_CONFIG || join(env.HOME || homedir(), '.docker');
  const path = join(dir, 'config.json');
  let config: { auths?: Record<string, DockerAuthEntry> };
  try {
    config = JSON.parse(await readFile(path, 'utf8')) as typeof config;
  } catch {
    // No file, or one that is not JSON: no login, as for the docker client.
    return null;
  }
  const auths = config.auths ?? {};
  const wanted = new Set(authKeys(host.toLowerCase()));
  for (const [key, entry] of Object.entries(auths)) {
    if (!wanted.has(key.toLowerCase()) || typeof entry !== 'object' || entry === null) continue;
    const login = decodeAuth(entry);
    if (login) return { ...login, from: path };
  }
  return null;
}

/**
 * Whether `host` is spoken to over plain HTTP: loopback registries (`localhost`, 127.0.0.0/8,
 * `[::1]`), and the `host:port` entries of `BTY_ORAS_INSECURE`. Never any other host.
 */
export function isPlainHttpHost(host: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const lower = host.toLowerCase();
  const bare = lower.startsWith('[')
    ? lower.slice(0, lower.indexOf(']') + 1)
    : lower.split(':')[0]!;
  if (bare === 'localhost' || bare === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(bare)) return true;
  const listed = (env.BTY_ORAS_INSECURE ?? '')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
  return listed.includes(lower);
}
