/**
 * Network namespaces for tests that need a real link between two hosts on this machine (packet
 * loss with `tc netem`, a DHCP/PXE segment, …). Everything here shells out to iproute2 as root.
 *
 * Typical use:
 *
 *   const server = await createNetns(uniqueName('srv'));
 *   const client = await createNetns(uniqueName('cli'));
 *   await createVethPair({
 *     a: { name: uniqueName('vs'), netns: server, address: '10.99.0.1/24' },
 *     b: { name: uniqueName('vc'), netns: client, address: '10.99.0.2/24' },
 *   });
 *   await addPacketLoss('vs…', 5, server);   // netem, or nftables where netem is missing
 *   const child = spawnInNetns(server, 'bin/bty-tftp', [...]);
 *   …
 *   finally: await deleteNetns(server); await deleteNetns(client);  // deletes the veth too
 *
 * Names include process.pid so parallel runs never clash; interface names are at most 15 bytes.
 */
import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

let counter = 0;

/** `prefix` + this process's id + a counter, cut to the 15 bytes an interface name may hold. */
export function uniqueName(prefix: string): string {
  const name = `${prefix}${process.pid.toString(36)}${(counter++).toString(36)}`;
  if (name.length > 15) throw new Error(`name ${name} is longer than 15 bytes: shorten ${prefix}`);
  return name;
}

/** Runs `ip ARGS…` (in namespace `netns` when given), failing with ip's own message. */
export async function ip(args: string[], netns?: string): Promise<string> {
  const full = netns === undefined ? args : ['-n', netns, ...args];
  try {
    return (await run('ip', full)).stdout;
  } catch (err) {
    const e = err as { stderr?: string };
    throw new Error(`ip ${full.join(' ')}: ${(e.stderr ?? String(err)).trim()}`, { cause: err });
  }
}

/** Creates namespace `name` with its loopback up; returns the name. */
export async function createNetns(name: string): Promise<string> {
  await ip(['netns', 'add', name]);
  await ip(['link', 'set', 'lo', 'up'], name);
  return name;
}

/** Deletes a namespace (and the interfaces in it); never throws, so it fits `finally`. */
export async function deleteNetns(name: string): Promise<void> {
  await ip(['netns', 'delete', name]).catch(() => {});
}

/** Deletes a link in the current namespace (a veth end left there); never throws. */
export async function deleteLink(name: string): Promise<void> {
  await ip(['link', 'delete', name]).catch(() => {});
}

export interface VethEnd {
  name: string;
  /** Namespace to move this end into; omitted: it stays in the current namespace. */
  netns?: string;
  /** Address with prefix length, e.g. '10.99.0.1/24'; omitted: no address. */
  address?: string;
}

/** Creates a veth pair, moves each end into its namespace, adds the addresses, sets both up. */
export async function createVethPair(ends: { a: VethEnd; b: VethEnd }): Promise<void> {
  await ip(['link', 'add', ends.a.name, 'type', 'veth', 'peer', 'name', ends.b.name]);
  for (const end of [ends.a, ends.b]) {
    if (end.netns !== undefined) await ip(['link', 'set', end.name, 'netns', end.netns]);
    if (end.address !== undefined) {
      await ip(['addr', 'add', end.address, 'dev', end.name], end.netns);
    }
    await ip(['link', 'set', end.name, 'up'], end.netns);
  }
}

/**
 * Adds a `tc netem` root qdisc on `dev` (in `netem`'s words, e.g. 'loss 5%' or 'delay 1ms'),
 * which shapes what leaves through that interface.
 */
export async function addNetem(dev: string, netem: string, netns?: string): Promise<void> {
  const args = ['qdisc', 'add', 'dev', dev, 'root', 'netem', ...netem.split(/\s+/)];
  const full = netns === undefined ? args : ['netns', 'exec', netns, 'tc', ...args];
  try {
    await run(netns === undefined ? 'tc' : 'ip', full);
  } catch (err) {
    const e = err as { stderr?: string };
    throw new Error(`tc ${args.join(' ')}: ${(e.stderr ?? String(err)).trim()}`, { cause: err });
  }
}

/**
 * Drops `percent` % of the packets leaving through `dev`, at random. With `tc netem` in the kernel
 * that is `netem loss N%`; kernels built without netem (CONFIG_NET_SCH_NETEM, as some VM kernels)
 * get the same from nftables (Debian package `nftables`): a `numgen random` drop on the device's
 * netdev egress hook (not the output hook, whose drops fail the sender's sendto with EPERM
 * instead of losing the packet). Resolves with which of the two is in place.
 */
export async function addPacketLoss(
  dev: string,
  percent: number,
  netns?: string,
): Promise<'netem' | 'nftables'> {
  try {
    await addNetem(dev, `loss ${percent}%`, netns);
    return 'netem';
  } catch (err) {
    if (!/qdisc kind is unknown/i.test(String((err as Error).message))) throw err;
  }
  const nft = async (args: string[]) => {
    const full = netns === undefined ? args : ['netns', 'exec', netns, 'nft', ...args];
    try {
      await run(netns === undefined ? 'nft' : 'ip', full);
    } catch (err) {
      const e = err as { stderr?: string; code?: string };
      const why = e.code === 'ENOENT' ? 'nft is not installed (Debian package nftables)' : '';
      throw new Error(`nft ${args.join(' ')}: ${why || (e.stderr ?? String(err)).trim()}`, {
        cause: err,
      });
    }
  };
  const table = `bty_loss_${dev}`;
  await nft(['add', 'table', 'netdev', table]);
  await nft([
    ...['add', 'chain', 'netdev', table, 'egress'],
    `{ type filter hook egress device ${dev} priority 0; policy accept; }`,
  ]);
  await nft([
    ...['add', 'rule', 'netdev', table, 'egress'],
    ...['numgen', 'random', 'mod', '100', '<', String(percent), 'drop'],
  ]);
  return 'nftables';
}

/** The argv that runs `command args…` inside a namespace (for execFile/spawn). */
export function inNetns(netns: string, command: string, args: string[]): [string, string[]] {
  return ['ip', ['netns', 'exec', netns, command, ...args]];
}

/** Runs a command to completion inside a namespace; rejects with its stderr on failure. */
export async function execInNetns(
  netns: string,
  command: string,
  args: string[],
  options: { timeoutMs?: number; encoding?: 'utf8' | 'buffer' } = {},
): Promise<{ stdout: string; stderr: string }> {
  const [file, argv] = inNetns(netns, command, args);
  const { stdout, stderr } = await run(file, argv, {
    timeout: options.timeoutMs ?? 60_000,
    killSignal: 'SIGKILL',
    maxBuffer: 64 * 1024 * 1024,
  });
  return { stdout: String(stdout), stderr: String(stderr) };
}

/**
 * Starts a long-running command inside a namespace. `ip netns exec` execs the command in place,
 * so the child's PID is the command's own: stop it with child.kill().
 */
export function spawnInNetns(
  netns: string,
  command: string,
  args: string[],
  options: SpawnOptions = {},
): ChildProcess {
  const [file, argv] = inNetns(netns, command, args);
  return spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
}
