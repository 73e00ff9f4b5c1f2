#!/bin/sh
. /etc/hello.conf
echo "$greeting from $(cat /app/name.txt)"
