#pragma once
#include <ringio.h>
