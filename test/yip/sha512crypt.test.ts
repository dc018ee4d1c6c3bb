import test from 'ava';
import { hashPassword, sha512Crypt } from '../../src/yip/sha512crypt.ts';

test('the test vectors of the SHA-crypt specification', (t) => {
  t.is(sha512Crypt('Hello world!', 'saltstring'), '$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1');
  t.is(sha512Crypt('Hello world!', 'saltstringsaltstring', 10000), '$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.');
  t.is(sha512Crypt('This is just a test', 'toolongsaltstring', 5000), '$6$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0');
});

test('a new hash has an 8-character [0-9a-zA-Z] salt and verifies', (t) => {
  const h = hashPassword('cos');
  const m = /^\$6\$([0-9a-zA-Z]{8})\$[./0-9A-Za-z]{86}$/.exec(h);
  t.truthy(m, h);
  t.is(sha512Crypt('cos', m?.[1] ?? ''), h);
});
