import type { Register } from './command.ts';

export const registerCatalog: Register = () => {};
