import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'bench/results/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-console': ['error', { allow: ['error'] }],
    },
  },
  { files: ['src/cli/**', 'src/dev/**', 'bench/**', 'test/**', 'examples/**'], rules: { 'no-console': 'off' } },
  // Tests poke at untyped JSON responses; production code stays strict.
  { files: ['test/**'], rules: { '@typescript-eslint/no-explicit-any': 'off' } },
);
